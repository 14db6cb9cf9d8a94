"""Input validation where a user can reach: the library's own errors, one-line CLI errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ostl
from ostl.run.cli import main

from .helpers import make_net, mse


def _learner(rule: str = "ostl") -> ostl.Learner:
    net = make_net("snu", [3, 4], recurrent=False)
    return ostl.Learner(net, rule, loss_fn=mse, optimizer=torch.optim.SGD(net.parameters(), lr=0.1))


def test_api_errors_are_the_library_errors() -> None:
    learner = _learner()
    x = torch.rand(2, 3, dtype=torch.float64)
    with pytest.raises(ostl.OSTLError, match="call reset"):
        learner.step(x)
    with pytest.raises(ostl.OptionError, match="batch_size must be a positive int"):
        learner.reset(0)
    learner.reset(2)
    with pytest.raises(ostl.DeviceError, match="x_t"):
        learner.step(x.to("meta"))
    with pytest.raises(ostl.DeviceError, match="target_t: expected a tensor on cpu"):
        learner.step(x, torch.zeros(2, 2, dtype=torch.float64, device="meta"))
    with pytest.raises(ostl.TargetError, match=r"loss_fn\(y_t, target_t\) failed.*\(2, 5\)"):
        learner.step(x, torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ostl.OptionError, match="update_every"):
        ostl.Learner(learner.net, "ostl", loss_fn=mse, optimizer=learner.optimizer, update_every=0)
    with pytest.raises(ostl.OptionError, match="unknown rule"):
        ostl.Learner(learner.net, "nope", loss_fn=mse, optimizer=learner.optimizer)
    with pytest.raises(ostl.DTypeError, match="one-hot"):
        osttp = _learner("osttp")
        osttp.reset(2)
        osttp.step(x, torch.zeros(2, dtype=torch.long))


def test_cli_path_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    for argv, message in [
        (["train", "--out", str(a_file), "--no-progress"], "is not a folder"),
        (["compare", "--out", str(a_file), "--no-progress"], "is not a folder"),
        (["train", "--config", str(bad_json)], "cannot read the config"),
        (["train", "--resume", str(a_file)], "no such run folder"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
