"""Marked sections of BENCHMARKS.md survive a rewrite by another command."""

from __future__ import annotations

import pytest

from ostl.run.sections import keep_sections, read_sections, write_section


def test_write_section_appends_then_replaces(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("# bench\n\nbody\n")
    write_section(path, "soak", "## Soak\n\nfirst")
    write_section(path, "dist", "## Distributed\n\nrow")
    write_section(path, "soak", "## Soak\n\nsecond")
    text = path.read_text()
    assert text.startswith("# bench\n\nbody\n")
    assert "first" not in text and text.count("second") == 1 and text.count("row") == 1
    assert list(read_sections(text)) == ["soak", "dist"]


def test_write_section_creates_the_file(tmp_path):
    path = tmp_path / "new.md"
    write_section(path, "soak", "x")
    block = read_sections(path.read_text())["soak"]
    assert block == "<!-- section:soak -->\nx\n<!-- /section:soak -->\n"


def test_keep_sections_carries_old_sections_over(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("# old report\n")
    write_section(path, "soak", "kept")
    new = keep_sections("# new report\n", path.read_text())
    assert new.startswith("# new report\n") and "kept" in new and "old report" not in new
    # a section the new text has already is not duplicated
    assert keep_sections(new, path.read_text()).count("kept") == 1


@pytest.mark.parametrize("name", ["", "Soak", "a b", "-x", "x-->"])
def test_bad_section_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="section name"):
        write_section(tmp_path / "B.md", name, "x")
