"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys: object) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    scope: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), scope)
    learner = scope["learner"]
    assert learner.updates == 1  # type: ignore[attr-defined]  # one target -> one update
    assert "cosine" in capsys.readouterr().out  # type: ignore[attr-defined]
