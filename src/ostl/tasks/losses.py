"""Per-step losses of the tasks: ``loss_fn(y_t, target_t)``, the scalar loss of one step, mean
over the batch.

Targets are float tensors (one-hot for classes, multi-hot for piano rolls), so every rule,
including target-projection ones (OSTTP), receives the same target. The losses are those of
:mod:`ostl.losses`, whose output errors the online rules take in closed form.
"""

from __future__ import annotations

from ..losses import bernoulli_nll, cross_entropy, mse

__all__ = ["cross_entropy", "mse", "bernoulli_nll"]
