"""Keeping extra trainable parameters (hint adapters) in an existing optimizer.

The parameters live in a dedicated, tagged parameter group that copies the hyper-parameters of
the optimizer's first group. Learning-rate schedulers attached to the optimizer get a matching
entry in their per-group lists, so they schedule the new group like the first one (and their
state dicts keep loading on resume).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn, optim

__all__ = ["GROUP_TAG", "find_group", "attach_parameters"]

#: Key marking the parameter group owned by distillation (saved with the optimizer state).
GROUP_TAG = "compressor_distillation"

# Per-parameter-group lists kept by torch's learning-rate schedulers.
_PER_GROUP_LISTS = ("base_lrs", "_last_lr", "lr_lambdas", "min_lrs", "max_lrs")


def find_group(optimizer: optim.Optimizer) -> dict[str, Any] | None:
    """The tagged distillation group of ``optimizer``, if any."""
    return next((group for group in optimizer.param_groups if group.get(GROUP_TAG)), None)


def attach_parameters(optimizer: optim.Optimizer, parameters: Sequence[nn.Parameter],
                      schedulers: Iterable[Any] = ()) -> bool:
    """Make ``parameters`` the content of the optimizer's tagged group.

    Adds the group (copying the first group's hyper-parameters and extending ``schedulers``)
    if it does not exist yet and there is something to add; replaces its parameters (dropping
    the optimizer state of removed ones) if they changed. Returns whether anything changed.
    """
    group = find_group(optimizer)
    if group is None:
        if not parameters:
            return False
        hyper = {key: value for key, value in optimizer.param_groups[0].items() if key != "params"}
        optimizer.add_param_group({**hyper, "params": list(parameters), GROUP_TAG: True})
        for scheduler in schedulers:
            _extend_scheduler(scheduler, len(optimizer.param_groups) - 1)
        return True
    current = {id(p) for p in group["params"]}
    if current == {id(p) for p in parameters} and len(current) == len(group["params"]):
        return False
    kept = {id(p) for p in parameters}
    for parameter in group["params"]:
        if id(parameter) not in kept:
            optimizer.state.pop(parameter, None)
    group["params"] = list(parameters)
    return True


def _extend_scheduler(scheduler: Any, old_groups: int) -> None:
    """Append the first group's entry to each per-group list of ``scheduler`` (recursively for
    schedulers that chain others)."""
    for name in _PER_GROUP_LISTS:
        values = getattr(scheduler, name, None)
        if isinstance(values, list) and len(values) == old_groups and values:
            values.append(values[0])
    for inner in getattr(scheduler, "_schedulers", ()):
        _extend_scheduler(inner, old_groups)
