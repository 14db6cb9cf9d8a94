"""Long streams: the Learner's memory and step time stay flat (python -m benchmarks.soak)."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.soak import main, soak, soak_markdown


def test_a_short_stream_holds_constant_rule_memory() -> None:
    r = soak("ostl", 300, window=100, hidden=8, checkpoint_every=150, replay=20)
    assert len(r.ms_per_step) == 3 and r.checkpoints == 2
    assert len(set(r.state_bytes)) == 1  # nothing kept per step
    assert all(v > 0 for v in r.replay_ms)
    assert r.rss_growth_mib < 50
    md = soak_markdown([r], "cmd")
    assert "| ostl | 300 |" in md and "Command: `cmd`" in md and "Machine:" in md


def test_the_command_checks_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--steps", "10", "--out", str(tmp_path / "B.md")])


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["ostl", "osttp", "bptt"])
def test_memory_and_step_time_stay_flat_over_a_long_stream(rule: str) -> None:
    r = soak(rule, 20_000, window=1000)
    assert len(set(r.state_bytes)) == 1
    assert r.rss_growth_mib < 20, r.rss_mib
    # the replay of the same steps from the early and the late state: the same machine load
    assert r.replay_ms[1] < 1.5 * r.replay_ms[0], r.replay_ms
