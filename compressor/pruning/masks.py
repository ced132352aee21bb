"""Fixed-shape pruning masks and their enforcement during training.

A :class:`MaskSet` holds one boolean keep-mask per parameter. Once attached, masked entries
stay exactly zero: gradient hooks zero their gradients, and a hook after every optimizer step
re-applies the masks to the weights and to the optimizer's per-parameter state (momentum,
Adam moments), so neither weight decay nor momentum can revive them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from compressor.errors import ConfigError

__all__ = ["MaskSet"]


class MaskSet:
    """Boolean keep-masks (``True`` = kept) for parameters of one model, by qualified name."""

    def __init__(self, masks: Mapping[str, torch.Tensor] | None = None) -> None:
        self.masks: dict[str, torch.Tensor] = {k: v.bool() for k, v in (masks or {}).items()}
        self._handles: list[Any] = []
        self._enforced: dict[int, torch.Tensor] = {}
        self._target: tuple[nn.Module, list[torch.optim.Optimizer]] | None = None

    def __len__(self) -> int:
        return len(self.masks)

    def __contains__(self, name: str) -> bool:
        return name in self.masks

    def update(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Replace the masks of the given parameters (others are kept); if attached, the new
        masks are enforced from now on."""
        for name, mask in masks.items():
            self.masks[name] = mask.bool()
        if self._target is not None:
            self.attach(*self._target)

    def clear(self) -> None:
        """Drop every mask and stop enforcing (e.g. after compaction)."""
        self.detach()
        self.masks.clear()

    def sparsity(self) -> float:
        """Fraction of masked-out entries over all masked parameters."""
        total = sum(m.numel() for m in self.masks.values())
        return sum(int((~m).sum()) for m in self.masks.values()) / total if total else 0.0

    # ---------------------------------------------------------------- enforce
    def apply(self, model: nn.Module) -> None:
        """Zero the masked-out entries of ``model``'s parameters."""
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, mask in self.masks.items():
                if name in parameters:
                    parameter = parameters[name]
                    parameter.mul_(mask.to(device=parameter.device, dtype=parameter.dtype))

    def attach(self, model: nn.Module,
               optimizers: torch.optim.Optimizer | Iterable[torch.optim.Optimizer] = ()) -> None:
        """Enforce the masks on ``model`` from now on (idempotent; re-attach after swapping
        parameters or optimizers)."""
        self.detach()
        optimizers = [optimizers] if isinstance(optimizers, torch.optim.Optimizer) else list(optimizers)
        self._target = (model, optimizers)
        parameters = dict(model.named_parameters())
        for name, mask in self.masks.items():
            parameter = parameters.get(name)
            if parameter is None or not parameter.requires_grad:
                continue
            keep = mask.to(parameter.device)
            self._enforced[id(parameter)] = keep
            self._handles.append(parameter.register_hook(
                lambda grad, keep=keep: grad * keep.to(grad.dtype)))
        for optimizer in optimizers:
            self._handles.append(optimizer.register_step_post_hook(self._after_step))
        self.apply(model)

    def rebind(self, model: nn.Module) -> None:
        """Follow a replacement of the model by an equivalent module with the same parameter
        names: enforcement stops and the masks are applied to ``model``.

        Raises:
            ConfigError: ``model`` lacks a masked parameter.
        """
        names = set(dict(model.named_parameters()))
        missing = [name for name in self.masks if name not in names]
        if missing:
            raise ConfigError(f"The pruned model was replaced by a module without the masked "
                              f"parameters {missing[:3]}; masks cannot follow. Finish pruning "
                              "before another callback replaces the model.")
        self.detach()
        self.apply(model)

    def detach(self) -> None:
        """Stop enforcing (the weights keep their zeros)."""
        self._target = None
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._enforced.clear()

    def _after_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        with torch.no_grad():
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    keep = self._enforced.get(id(parameter))
                    if keep is None:
                        continue
                    parameter.mul_(keep.to(parameter.dtype))
                    for value in optimizer.state.get(parameter, {}).values():
                        if isinstance(value, torch.Tensor) and value.shape == parameter.shape:
                            value.mul_(keep.to(value.dtype))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The masks (CPU boolean tensors)."""
        return {name: mask.cpu() for name, mask in self.masks.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore masks saved by :meth:`state_dict`."""
        self.masks = {name: mask.bool() for name, mask in state.items()}
