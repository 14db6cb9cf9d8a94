"""The API reference site's sources (mkdocs.yml, docs/) hang together, without building it.

`make docs` builds the site (mkdocs --strict); these checks are cheap and need neither mkdocs
nor PyYAML: every page of the navigation exists, every page under docs/api/ is in it, and every
``::: name`` directive names a module of src/ (and, for ``::: module.Name``, a name that the
module defines). The reST-to-Markdown rewriting of scripts/griffe_rest.py is tested where
griffe (the docs extra) is installed.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SRC = ROOT / "src"
MKDOCS = (ROOT / "mkdocs.yml").read_text()


def nav_pages() -> list[str]:
    """The Markdown files of mkdocs.yml's ``nav:`` (``- Title: page.md`` lines)."""
    nav = MKDOCS.split("\nnav:\n", 1)[1]
    nav = re.split(r"\n\S", nav, maxsplit=1)[0]  # up to the next top-level key
    return re.findall(r"^\s*- (?:[^\n]*?: )?(\S+\.md)\s*$", nav, flags=re.M)


def directives() -> list[tuple[str, str]]:
    """(page, name) of every ``::: name`` directive under docs/."""
    return [
        (str(page.relative_to(DOCS)), name)
        for page in sorted(DOCS.rglob("*.md"))
        for name in re.findall(r"^::: *(\S+)\s*$", page.read_text(), flags=re.M)
    ]


def module_file(name: str) -> Path | None:
    """src/a/b.py or src/a/b/__init__.py for the module ``a.b``; None if neither exists."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_the_navigation_lists_existing_pages() -> None:
    pages = nav_pages()
    assert "index.md" in pages and any(p.startswith("api/") for p in pages)
    assert len(pages) == len(set(pages)), "a page is listed twice"
    assert [p for p in pages if not (DOCS / p).is_file()] == []


def test_every_api_page_is_in_the_navigation() -> None:
    pages = set(nav_pages())
    api = {str(p.relative_to(DOCS)) for p in (DOCS / "api").glob("*.md")}
    assert sorted(api - pages) == []


def test_directives_name_modules_of_the_sources() -> None:
    found = directives()
    assert any(name == "ostl.hardware" for _, name in found)
    for page, name in found:
        parts = name.split(".")
        # the longest prefix that is a module; the rest is an object that module defines
        for cut in range(len(parts), 0, -1):
            path = module_file(".".join(parts[:cut]))
            if path is not None:
                break
        assert path is not None, f"{page}: ::: {name}: no module of src/ holds it"
        if cut < len(parts):
            member = parts[cut]
            assert re.search(rf"\b{re.escape(member)}\b", path.read_text()), (
                f"{page}: ::: {name}: {path.relative_to(ROOT)} does not define {member}"
            )


def test_the_griffe_extension_of_mkdocs_yml_exists() -> None:
    extensions = re.findall(r"^\s*- (scripts/\S+\.py)\s*$", MKDOCS, flags=re.M)
    assert extensions and all((ROOT / e).is_file() for e in extensions)


@pytest.fixture(scope="module")
def rest() -> ModuleType:
    pytest.importorskip("griffe", reason="griffe comes with the docs extra (make docs)")
    spec = importlib.util.spec_from_file_location("griffe_rest", ROOT / "scripts/griffe_rest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_roles_name_the_objects_they_point_to(rest: ModuleType) -> None:
    import griffe

    pkg = griffe.load("ostl", search_paths=[str(SRC)], allow_inspection=False)
    cases = [  # where the docstring is, the role's target, the object it names
        ("rules.ostl.OSTL", "~ostl.rules.trace.TraceRule", "ostl.rules.trace.TraceRule"),
        ("rules", "ostl.rules.trace", "ostl.rules.trace"),  # not ostl.rules.ostl.rules.trace
        ("rules.base.Runner.step", "state_dict", "ostl.rules.base.Runner.state_dict"),
        ("run.model", ".outputs.RunFolder", "ostl.run.outputs.RunFolder"),
        ("engine", ".jacobians", "ostl.engine.jacobians"),
        ("run.model", "network_of", "ostl.run.model.network_of"),
    ]
    for where, role, ident in cases:
        assert rest._target(role, pkg[where])[0] == ident, role
    titles = [rest._target(role, pkg[where])[1] for where, role, _ in cases]
    assert titles == ["TraceRule", "ostl.rules.trace", "state_dict", "RunFolder", "jacobians",
                      "network_of"]  # fmt: skip
    text = rest._roles("see :class:`~ostl.Network`.", pkg["api"])
    assert text == 'see <autoref identifier="ostl.Network" optional><code>Network</code></autoref>.'


def test_literal_blocks_become_fenced(rest: ModuleType) -> None:
    lines = ["It contracts it::", "", "    e = A e + b", "      g = w e", "", "Then."]
    assert rest._literal_blocks(lines) == [
        "It contracts it:",
        "",
        "```text",
        "e = A e + b",
        "  g = w e",
        "```",
        "",
        "Then.",
    ]
    assert rest._literal_blocks(["::", "", "  ostl list"]) == ["", "```text", "ostl list", "```"]
    assert rest._literal_blocks(["a ``x::y`` b::", "no block"]) == ["a ``x::y`` b::", "no block"]


def test_simple_tables_become_markdown_tables(rest: ModuleType) -> None:
    lines = [
        "====  ==========",
        "name  metric",
        "====  ==========",
        "a|b   accuracy",
        "c     mse",
        "      (per step)",
        "====  ==========",
    ]
    assert rest._simple_tables(lines) == [
        "| name | metric |",
        "|---|---|",
        "| a\\|b | accuracy |",
        "| c | mse (per step) |",
    ]


def test_list_items_are_indented_by_four(rest: ModuleType) -> None:
    lines = ["- one", "  more", "", "  ====", "", "- two", "  end", "after"]
    assert rest._list_items(lines) == [
        "- one",
        "    more",
        "",
        "    ====",
        "",
        "- two",
        "    end",
        "after",
    ]
    # an item after a block of the previous item gets a blank line before it
    assert rest._list_items(["- one", "", "  text", "- two"]) == [
        "- one",
        "",
        "    text",
        "",
        "- two",
    ]
