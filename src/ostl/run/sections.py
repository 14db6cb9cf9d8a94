"""Marked sections of a generated Markdown file, written by other commands and kept on rewrite.

``BENCHMARKS.md`` is regenerated as a whole by ``python -m benchmarks``, but some of its
sections come from other commands (the soak test of a long stream, the distributed
throughput). Each such command writes its section between two markers::

    <!-- section:soak -->
    ...
    <!-- /section:soak -->

:func:`write_section` replaces the section of that name (or appends it), and
:func:`keep_sections` carries every marked section of the old file over into a new text, so
rerunning one command never loses what another wrote.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["write_section", "read_sections", "keep_sections", "section_block", "describe_machine"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_BLOCK = re.compile(
    r"<!-- section:(?P<name>[a-z0-9][a-z0-9_-]*) -->\n.*?<!-- /section:(?P=name) -->\n?", re.S
)


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"section name must match {_NAME.pattern}, got {name!r}")


def section_block(name: str, markdown: str) -> str:
    """The text of section ``name`` with its markers, ending in a newline."""
    _check_name(name)
    body = markdown.strip("\n")
    return f"<!-- section:{name} -->\n{body}\n<!-- /section:{name} -->\n"


def read_sections(text: str) -> dict[str, str]:
    """Every marked section of ``text``, by name, markers included."""
    return {m.group("name"): m.group(0) for m in _BLOCK.finditer(text)}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _splice(text: str, name: str, block: str) -> str:
    pattern = re.compile(
        rf"<!-- section:{re.escape(name)} -->\n.*?<!-- /section:{re.escape(name)} -->\n?", re.S
    )
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    if text and not text.endswith("\n"):
        text += "\n"
    return text + ("\n" if text else "") + block


def write_section(path: str | Path, name: str, markdown: str) -> None:
    """Replace section ``name`` of the file at ``path`` (append it if absent; create the file)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    _atomic_write(path, _splice(old, name, section_block(name, markdown)))


def keep_sections(new_text: str, old_text: str) -> str:
    """``new_text`` with every marked section of ``old_text`` that it lacks appended."""
    have = read_sections(new_text)
    for name, block in read_sections(old_text).items():
        if name not in have:
            new_text = _splice(new_text, name, block if block.endswith("\n") else block + "\n")
    return new_text


def describe_machine() -> str:
    """One line for a report: cores and CPU model, OS, Python, torch and its thread count."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s)"
    )
