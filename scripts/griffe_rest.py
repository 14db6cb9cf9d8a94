"""Griffe extension of the API reference site (mkdocs.yml): the docstrings' reST as Markdown.

The docstrings are Google style (``Args:``, ``Returns:``, ``Raises:``), which mkdocstrings
parses, but their prose uses a few reStructuredText constructs that Markdown does not know.
Before mkdocstrings renders a docstring, this extension rewrites, in the text it renders only
(the sources are not touched):

- cross-reference roles, ``:class:`~ostl.Network``` (also ``:func:``, ``:meth:``, ``:mod:``,
  ``:data:``, ...): a code span, linked to the object's entry where the site has one (an
  optional mkdocs-autorefs reference: a name the site does not document stays plain text,
  without a warning). ``~`` shows the last component only; a leading ``.`` is relative to the
  docstring's package; other names are looked up in the enclosing classes and module first;
- literal blocks (a paragraph ending with ``::`` and an indented block): a fenced code block;
- simple tables (columns framed by ``====  ====`` lines): a Markdown table;
- list items whose continuation lines are indented by the width of the bullet (``- ``, two
  spaces) as reST has them: re-indented by four, so that a table, a code block or a nested
  list inside an item stays in it (Python-Markdown needs four).

Nothing of ostl is imported: the extension works on the text that griffe read from the sources.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|type):`([^`]+)`")
_BORDER = re.compile(r"^(\s*)(=+)( +=+)+\s*$")
_BULLET = re.compile(r"^(\s*)([-*+]|\d+[.)]) +\S")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _target(name: str, obj: griffe.Object) -> tuple[str, str]:
    """The identifier and the title of a role's target ``name`` in ``obj``'s docstring."""
    short = name.startswith("~")
    name = name.lstrip("~").removesuffix("()")
    if name.startswith("."):
        # relative to the package that holds the docstring's module (a package: itself)
        module = obj.module
        package = module.path if module.is_init_module else module.path.rpartition(".")[0]
        ident = package + name
        if name.startswith(".."):
            ident = package.rpartition(".")[0] + name[1:]
        return ident, name.rsplit(".", 1)[-1]
    # as Sphinx does: in the enclosing classes and module first, then the name as written
    candidates = []
    scope: griffe.Object | None = obj
    while scope is not None:
        if scope.is_class or scope.is_module:
            candidates.append(f"{scope.path}.{name}")
        scope = None if scope.is_module else scope.parent
    candidates.append(name)
    ident = next((c for c in candidates if _exists(obj, c)), candidates[-1 if "." in name else -2])
    return ident, name.rsplit(".", 1)[-1] if short else name


def _exists(obj: griffe.Object, ident: str) -> bool:
    try:
        obj.modules_collection[ident]
    except Exception:  # KeyError, or an alias to something outside the loaded packages
        return False
    return True


def _roles(text: str, obj: griffe.Object) -> str:
    def link(match: re.Match[str]) -> str:
        ident, title = _target(match[1].strip(), obj)
        code = f"<code>{html.escape(title)}</code>"
        return f'<autoref identifier="{html.escape(ident)}" optional>{code}</autoref>'

    return _ROLE.sub(link, text)


def _literal_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::"):
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        k = j
        while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) > base):
            k += 1
        while k > j and not lines[k - 1].strip():
            k -= 1
        if k == j:  # no indented block follows: not a literal block
            out.append(line)
            i += 1
            continue
        text = line.rstrip()[:-2].rstrip()
        if text:  # "text::" reads "text:"; a lone "::" disappears
            out.append(text + ":")
        out.append("")
        block = lines[j:k]
        cut = min(_indent(b) for b in block if b.strip())
        pad = " " * base
        out.append(pad + "```text")
        out.extend(pad + b[cut:] if b.strip() else "" for b in block)
        out.append(pad + "```")
        i = k
    return out


def _list_items(lines: list[str]) -> list[str]:
    out: list[str] = []
    # open list items: content indent, shift of their lines, and whether they hold a blank line
    items: list[tuple[int, int, bool]] = []
    fenced = False
    for line in lines:
        if not line.strip():
            items = [(indent, shift, True) for indent, shift, _ in items]
            out.append(line)
            continue
        indent = _indent(line)
        closed_blocks = False
        while items and indent < items[-1][0]:
            closed_blocks = items.pop()[2]
        shift = items[-1][1] if items else 0
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif (bullet := _BULLET.match(line)) and not fenced:
            if closed_blocks and out and out[-1].strip():
                # the previous item ends with a block of its own: without a blank line, Markdown
                # would read this item as that block's continuation
                out.append("")
            width = len(bullet[0]) - 1 - indent  # marker and spaces
            items.append((indent + width, shift + max(4 - width, 0), False))
        out.append(" " * shift + line)
    return out


def _cells(line: str, starts: list[int]) -> list[str]:
    """The cells of a simple table's row, its columns starting at ``starts``."""
    ends = [*starts[1:], None]
    return [line[a:b].strip().replace("|", "\\|") for a, b in zip(starts, ends)]


def _simple_tables(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _BORDER.match(lines[i])
        # a table: three borders (top, under the header, bottom), no blank line in between
        borders = [n for n in range(i, len(lines)) if _BORDER.match(lines[n])][:3] if match else []
        if len(borders) < 3 or any(not lines[n].strip() for n in range(i, borders[2])):
            out.append(lines[i])
            i += 1
            continue
        starts = [m.start() for m in re.finditer(r"=+", lines[i])]
        rows: list[list[str]] = []
        for n in range(i + 1, borders[2]):
            if n == borders[1]:
                continue
            row = _cells(lines[n], starts)
            if rows and not row[0] and n != borders[1] + 1:  # continuation line of a row
                rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], row)]
            else:
                rows.append(row)
        pad = match[1] if match else ""
        out.append(pad + "| " + " | ".join(rows[0]) + " |")
        out.append(pad + "|" + "---|" * len(starts))
        out.extend(pad + "| " + " | ".join(row) + " |" for row in rows[1:])
        i = borders[2] + 1
    return out


class RestToMarkdown(griffe.Extension):
    """Rewrites every docstring's reST as Markdown, as the module docstring says."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        lines = _literal_blocks(obj.docstring.value.splitlines())
        lines = _simple_tables(_list_items(lines))
        obj.docstring.value = _roles("\n".join(lines), obj)
