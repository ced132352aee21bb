"""Recording a model's inputs, output and named layer outputs during one forward pass.

Hooks exist only while a capture is armed (the ``armed()`` context) and are attached to the
modules found *at that moment*, so a model that is replaced (compacted, QAT-prepared) between
steps is followed automatically and no hook leaks into copies or exports made outside a step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch import fx, nn

from compressor.errors import ConfigError, UnknownNameError
from compressor.utils.modules import get_submodule

__all__ = ["ModuleCapture", "resolve_layers"]


def _graph_hint(root: nn.Module, role: str) -> str:
    if isinstance(root, fx.GraphModule):
        return (f"The {role} is now a {type(root).__name__} (for example after QAT preparation): "
                "its layers are no longer called as named modules, so feature and attention "
                "distillation cannot follow it; use logit distillation only for that phase.")
    return "Use names from model.named_modules()."


def resolve_layers(root: nn.Module, names: Sequence[str], role: str) -> dict[str, nn.Module]:
    """The submodules of ``root`` at the dotted ``names``.

    Raises:
        UnknownNameError: a name does not exist; the message lists the closest names.
    """
    layers = {}
    for name in names:
        try:
            layers[name] = get_submodule(root, name)
        except UnknownNameError:
            valid = [n for n, _ in root.named_modules() if n]
            raise UnknownNameError(f"{role} layer", name, valid, _graph_hint(root, role)) from None
    return layers


class ModuleCapture:
    """Captures what a model (resolved by ``resolve()`` when armed) receives and returns.

    Args:
        resolve: Returns the model to watch; called each time the capture is armed.
        layers: Dotted names of submodules whose outputs are recorded.
        role: ``"student"`` or ``"teacher"`` (used in error messages).
    """

    def __init__(self, resolve: Callable[[], nn.Module], layers: Sequence[str], role: str) -> None:
        self.resolve, self.layers, self.role = resolve, list(layers), role
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] = {}
        self.output: Any = None
        self.features: dict[str, Any] = {}
        self.calls = 0
        self._layer_calls: dict[str, int] = {}

    def clear(self) -> None:
        """Drop every recorded tensor (they hold the autograd graph)."""
        self.args, self.kwargs, self.output, self.features = (), {}, None, {}
        self.calls, self._layer_calls = 0, {}

    @contextlib.contextmanager
    def armed(self) -> Iterator[ModuleCapture]:
        """Record during the ``with`` block; hooks are removed on exit, recordings kept."""
        self.clear()
        root = self.resolve()
        layers = resolve_layers(root, self.layers, self.role)
        handles = [root.register_forward_pre_hook(self._on_inputs, with_kwargs=True),
                   root.register_forward_hook(self._on_output)]
        handles += [module.register_forward_hook(self._layer_hook(name))
                    for name, module in layers.items()]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def check_complete(self, where: str) -> None:
        """Raise unless the model ran exactly once and every layer exactly once.

        Raises:
            ConfigError: explains what was (not) called and how to fix it.
        """
        if self.calls != 1:
            raise ConfigError(
                f"The {self.role} was called {self.calls} times {where}; distillation needs "
                f"exactly one {self.role} forward per step (the teacher runs on the captured "
                "inputs). If the model to distil is a different submodule, pass `student=` "
                "with its attribute path.")
        root = self.resolve()
        for name in self.layers:
            count = self._layer_calls.get(name, 0)
            if count != 1:
                raise ConfigError(
                    f"{self.role.capitalize()} layer {name!r} ran {count} times in one forward "
                    f"pass (expected once). Pick a layer that runs exactly once per forward "
                    f"(not a shared activation module). {_graph_hint(root, self.role)}")

    def _on_inputs(self, module: nn.Module, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> None:
        if self.calls == 0:
            self.args, self.kwargs = args, dict(kwargs)

    def _on_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.calls += 1
        if self.calls == 1:
            self.output = output

    def _layer_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self._layer_calls[name] = self._layer_calls.get(name, 0) + 1
            self.features.setdefault(name, output)
        return hook
