"""The :class:`ostl.Learner`'s checks of its arguments, each with an error that says what was
expected: the options, the optimizer (it must hold the network's trainable parameters, with a
finite learning rate), the rule of an update-unlocked learner and a state to continue from."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .engine import carry as tree
from .errors import CheckpointError, OptionError, UnsupportedError, nonfinite_names
from .rules.base import NONFINITE, Runner

__all__ = ["check_options", "check_optimizer", "check_state", "check_unlockable"]


def check_options(
    loss_fn: Any,
    optimizer: Any,
    update_every: int | None,
    nonfinite: str,
    unlocked: bool,
    compile: bool,
    max_skips: Any = 100,
) -> None:
    """The Learner's options, each with an error that says what was expected."""
    if update_every is not None and (
        not isinstance(update_every, int) or isinstance(update_every, bool) or update_every <= 0
    ):
        raise OptionError(f"update_every must be a positive int or None, got {update_every!r}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(y_t, target_t) -> scalar")
    if nonfinite not in NONFINITE:
        raise OptionError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
    if not isinstance(max_skips, int) or isinstance(max_skips, bool) or max_skips <= 0:
        raise OptionError(f"max_skips must be a positive int, got {max_skips!r}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if unlocked and update_every != 1:
        raise OptionError(
            "unlocked=True applies each layer's update right after its own step: it "
            f"needs update_every=1, got {update_every!r}"
        )
    if unlocked and compile:
        raise OptionError(
            "compile=True compiles the whole step; unlocked=True applies updates in the "
            "middle of it: choose one"
        )


def check_optimizer(optimizer: torch.optim.Optimizer, params: Mapping[str, Tensor]) -> None:
    """The optimizer holds every trainable parameter (``params``) and finite learning rates.

    An optimizer over another network's parameters would step nothing of this one: its
    updates would be counted while the weights never change.
    """
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [n for n, p in params.items() if id(p) not in held]
    if missing:
        some = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        held_n = len(params) - len(missing)
        which = f"only {held_n} of" if held_n else "none of"
        raise OptionError(
            f"the optimizer holds {which} the network's {len(params)} trainable parameters "
            f"(missing: {some}): build it over this network's parameters, e.g. "
            "torch.optim.Adam(net.parameters())"
        )
    for i, group in enumerate(optimizer.param_groups):
        lr = group.get("lr")
        value = float(lr) if isinstance(lr, int | float | Tensor) else None
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise OptionError(
                f"optimizer param group {i}: lr must be a finite number >= 0, got {value!r}"
            )


def check_unlockable(runner: Runner) -> Runner:
    """The runner, if its rule can run the update-unlocked schedule; else a clear error."""
    if getattr(runner.rule, "signal", None) != "target":
        raise UnsupportedError(
            f"{runner.rule!r} is update-locked: its learning signals need the whole forward pass "
            "at step t (and a backward sweep across layers, or through time); only OSTTP's hidden "
            "updates need nothing from the layers above. Use ostl.rules.OSTTP, or unlocked=False."
        )
    return runner


def check_state(state: Any, options: Mapping[str, Any]) -> None:
    """A :meth:`ostl.Learner.state_dict` that a learner built with ``options`` can continue.

    Raises:
        CheckpointError: the state is not a learner's, was saved with other ``options``, or
            holds NaN or Inf (weights, optimizer state, rule state: named in the message).
    """
    if not isinstance(state, dict) or "runner" not in state or "net" not in state:
        raise CheckpointError("not a Learner state_dict (keys net, optimizer, runner, ...)")
    for key, value in options.items():
        if state[key] != value:
            raise CheckpointError(
                f"the saved learner had {key}={state[key]!r}, this one {value!r}: "
                "build the learner with the same options to continue"
            )
    parts = {k: state.get(k) for k in ("net", "optimizer", "runner")}
    bad = nonfinite_names(tree.named_tensors(parts))
    if bad:
        raise CheckpointError(
            f"the saved learner holds NaN or Inf in {', '.join(bad[:5])}"
            f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}: refusing to continue "
            "from it (resume from an earlier checkpoint)"
        )
