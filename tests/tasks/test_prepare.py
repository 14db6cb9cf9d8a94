"""One-time data preparation says so: a message, a bar on a terminal, a plain end line else."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ostl.tasks.data import preparing


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_preparing_names_the_cache_and_ends_with_a_line(tmp_path: Path) -> None:
    out = io.StringIO()
    items = list(preparing("toy", [1, 2, 3], tmp_path / "toy.npz", unit="piece", stream=out))
    assert items == [1, 2, 3]
    lines = out.getvalue().splitlines()
    assert lines[0] == f"preparing toy data (one time, cached in {tmp_path / 'toy.npz'})..."
    assert lines[1].startswith("toy data ready: 3 pieces in ") and len(lines) == 2
    assert "\r" not in out.getvalue()  # not a terminal: no bar


def test_preparing_shows_a_bar_on_a_terminal() -> None:
    out = _Terminal()
    assert list(preparing("toy", range(4), stream=out)) == [0, 1, 2, 3]
    text = out.getvalue()
    assert text.startswith("preparing toy data...\n") and "\r" in text  # the bar, redrawn
    assert text.rstrip().endswith("toy data ready: 4 items in 0 s")


def test_the_chorales_cache_is_built_once_with_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("music21")
    from ostl.tasks.chorales import load_rolls

    monkeypatch.setenv("OSTL_CACHE", str(tmp_path))
    rolls = load_rolls(max_pieces=5)  # parses 5 pieces of music21's corpus (about a second)
    err = capsys.readouterr().err
    cache = tmp_path / "chorales-v1-5.npz"
    assert f"preparing chorales data (one time, cached in {cache})..." in err
    assert "chorales data ready: 5 pieces in" in err and cache.exists()
    again = load_rolls(max_pieces=5)  # from the cache: nothing to say
    assert capsys.readouterr().err == ""
    assert [r.shape for r in again] == [r.shape for r in rolls]
