"""Finding where NaN/Inf first appear in a model (plain ``nn.Module`` and ``torch.fx`` graphs).

The cheap part, :func:`all_finite`, is meant for every training step (one
``torch.isfinite(...).all()`` per tensor). The expensive part, :func:`find_non_finite`, runs only
once a check has failed: it runs the model again on the same inputs and reports the first place
whose output is non-finite. For an ordinary module that is the first submodule to *finish* with a
non-finite output (so the innermost one), or the module whose own code between its submodules
produced it; for a ``torch.fx.GraphModule`` (e.g. a QAT-prepared ``torch.export`` graph, whose
layers are no longer called as modules) it is the first graph node, reported with the module it
came from (``nn_module_stack``).

:func:`non_finite_ranges` checks the range buffers of quantization observers (``min_val`` /
``max_val``, and the ``scale`` of fake quantizers) in a few tensor operations, and
:func:`non_finite_parameters` names the parameters holding NaN/Inf.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.utils import _pytree

from compressor.utils.inputs import as_args
from compressor.utils.modes import record_modes, restore_modes
from compressor.utils.modules import innermost_module_path

__all__ = ["NonFiniteSource", "all_finite", "find_non_finite", "non_finite_ranges",
           "non_finite_parameters", "describe_submodule", "submodule_owner", "node_module"]

_MAX_LISTED = 5


def _tensors(value: Any) -> Iterator[Tensor]:
    """The floating-point (and complex) dense tensors inside a nested value."""
    if isinstance(value, Tensor):
        if (value.is_floating_point() or value.is_complex()) and value.layout == torch.strided \
                and value.device.type != "meta":
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from _tensors(getattr(value, item.name))


def all_finite(value: Any) -> bool:
    """Whether every floating-point tensor in ``value`` (a tensor, or nested tuples, lists,
    mappings and dataclasses of them) holds only finite numbers. Other leaves are ignored.

    One reduction per tensor and a single device synchronisation.
    """
    flags = [_finite_flag(t) for t in _tensors(value) if t.numel()]
    if not flags:
        return True
    if len(flags) == 1:
        return bool(flags[0])
    return bool(torch.stack([f.to(flags[0].device) for f in flags]).all())


# Above this many elements a single min/max pass (NaN and Inf survive it) replaces isfinite,
# which writes a boolean tensor as large as its input: about 15x faster on CPU weights.
_LARGE = 4096


def _finite_flag(tensor: Tensor) -> Tensor:
    tensor = tensor.detach()
    if tensor.numel() <= _LARGE or tensor.is_complex():
        return torch.isfinite(tensor).all()
    return torch.isfinite(torch.stack(torch.aminmax(tensor))).all()


@dataclasses.dataclass(frozen=True)
class NonFiniteSource:
    """Where a forward pass first produced a non-finite value.

    Attributes:
        kind: ``"inputs"`` (the inputs already were non-finite), ``"module"`` (a submodule's
            output), ``"code"`` (the module's own code between its submodules: the next
            submodule received a non-finite input), ``"node"`` (a node of a graph module) or
            ``"error"`` (the forward raised while re-running, e.g. an observer refusing a NaN
            range; ``detail`` holds the exception).
        name: Module path relative to the searched model (``""`` is the model itself) or, for
            nodes, the node's name.
        type_name: Class name of the module, or the node's operation.
        module: Module path to act on (``keep_float``, inspection): ``name`` for modules, the
            path recorded in a node's ``nn_module_stack``; ``None`` if unknown.
        detail: More facts, e.g. a non-finite parameter of that module.
    """

    kind: str
    name: str = ""
    type_name: str = ""
    module: str | None = None
    detail: str = ""

    def describe(self, role: str = "model") -> str:
        """One sentence for an error message (``role`` names the model: student, teacher)."""
        if self.kind == "inputs":
            text = f"The {role}'s inputs of this batch are already non-finite"
        elif self.kind == "node":
            text = f"First non-finite output in the {role}: graph node {self.name!r} " \
                   f"({self.type_name})"
            if self.module is not None:
                text += f" of module {_shown(self.module)}"
        elif self.kind == "code":
            owner = f"the forward of {self.name!r}" if self.name else "the model's own forward"
            text = (f"First non-finite value in the {role}: computed in {owner} "
                    f"({self.type_name}), outside its submodules")
        elif self.kind == "error":
            where = _shown(self.module) if self.module is not None else repr(self.name)
            text = f"Re-running the {role} on this batch failed in {where} ({self.type_name})"
        else:
            text = (f"First module of the {role} with a non-finite output: "
                    f"{_shown(self.name)} ({self.type_name})")
        return text + (f"; {self.detail}" if self.detail else "") + "."


def _shown(path: str) -> str:
    return repr(path) if path else "the model's own forward"


class _Found(Exception):  # noqa: N818 - control flow, never escapes this module
    def __init__(self, source: NonFiniteSource) -> None:
        super().__init__(source.kind)
        self.source = source


def find_non_finite(model: nn.Module, args: Any = (), kwargs: Mapping[str, Any] | None = None
                    ) -> NonFiniteSource | None:
    """Run ``model(*args, **kwargs)`` again and return where the first non-finite value appears.

    Forward hooks on every submodule (or, for a ``torch.fx.GraphModule``, a node-by-node
    interpreter) watch the outputs in execution order. The run happens under ``no_grad`` in the
    model's current mode (the conditions of the failed training step); buffers (batch-norm
    statistics, observer ranges) and the random-number state are restored afterwards, and
    ``SyncBatchNorm`` layers run in eval mode meanwhile so that no process waits for the others.

    Args:
        model: The model that produced a non-finite value.
        args: Its positional inputs (a tuple, or a single tensor).
        kwargs: Its keyword inputs.

    Returns:
        The first place with a non-finite output (the inputs themselves if they are
        non-finite), or ``None`` if the run gives finite outputs (the value was produced
        outside ``model``, e.g. by the loss function, or by randomness such as dropout).
    """
    args = as_args(args)
    kwargs = dict(kwargs or {})
    if not all_finite((args, kwargs)):
        return NonFiniteSource("inputs")
    with _preserved_state(model), torch.no_grad():
        if isinstance(model, fx.GraphModule):
            return _search_graph(model, args, kwargs)
        return _search_modules(model, args, kwargs)


@contextlib.contextmanager
def _preserved_state(model: nn.Module) -> Iterator[None]:
    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    _neutralise_statistics(model)
    modes = record_modes(model)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for module in model.modules():
            if isinstance(module, nn.SyncBatchNorm) and module.training:
                module.train(False)
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        restore_modes(model, modes)
        current = dict(model.named_buffers())
        with torch.no_grad():
            for name, saved in buffers.items():
                buffer = current.get(name)
                if buffer is None:
                    continue
                if buffer.shape != saved.shape:
                    buffer.resize_(saved.shape)
                buffer.copy_(saved)


# Running statistics a training forward updates, and a neutral value for each.
_NEUTRAL = {"running_mean": 0.0, "running_var": 1.0}


def _neutralise_statistics(model: nn.Module) -> None:
    """Replace non-finite running statistics by neutral values for the re-run.

    The failed forward has already folded its non-finite activations into the statistics it
    updates (batch-norm running mean/variance, observer ranges). Left so, every layer using them
    (QAT folds batch norm with the running variance) would be non-finite from the start of the
    re-run and hide the layer that really overflowed. Non-finite running means / variances
    become 0 / 1, a non-finite observer range becomes "nothing observed yet" (the batch's own
    range is taken) and a non-finite fake-quantization scale becomes 1.
    """
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            neutral = _NEUTRAL.get(name.rpartition(".")[2])
            if neutral is not None and buffer.is_floating_point() and not all_finite(buffer):
                buffer.copy_(torch.where(torch.isfinite(buffer), buffer,
                                         torch.full_like(buffer, neutral)))
        for module in model.modules():
            low, high = getattr(module, "min_val", None), getattr(module, "max_val", None)
            if isinstance(low, Tensor) and isinstance(high, Tensor) and low.shape == high.shape \
                    and _bad_range(low, high).any():
                low.fill_(math.inf)
                high.fill_(-math.inf)
            scale = getattr(module, "scale", None)
            if isinstance(scale, Tensor) and hasattr(module, "activation_post_process") \
                    and not all_finite(scale):
                scale.fill_(1.0)
                zero_point = getattr(module, "zero_point", None)
                if isinstance(zero_point, Tensor):
                    zero_point.zero_()


def _bad_range(low: Tensor, high: Tensor) -> Tensor:
    """Entries of an observer range that are not finite (the initial ``+inf``/``-inf`` of an
    observer that has seen nothing yet is fine)."""
    return low.isnan() | high.isnan() | (low == -math.inf) | (high == math.inf)


def _search_modules(model: nn.Module, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> NonFiniteSource | None:
    running: list[tuple[str, nn.Module]] = []
    graph_inputs: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def before(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...], kw: dict[str, Any]) -> None:
            if running and not all_finite((inputs, kw)):
                parent, owner = running[-1]
                raise _Found(_with_detail(NonFiniteSource("code", parent, type(owner).__name__,
                                                          parent), owner))
            if isinstance(module, fx.GraphModule) and name not in graph_inputs:
                graph_inputs[name] = (inputs, dict(kw))
            running.append((name, module))
        return hook

    def after(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            running.pop()
            if not all_finite(output):
                raise _Found(_with_detail(NonFiniteSource("module", name, type(module).__name__,
                                                          name), module))
        return hook

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(before(name), with_kwargs=True))
        handles.append(module.register_forward_hook(after(name)))
    try:
        model(*args, **kwargs)
        return None
    except _Found as found:
        source = found.source
    except Exception as error:  # noqa: BLE001 - the failure itself is what we report
        name, module = running[-1] if running else ("", model)
        return NonFiniteSource("error", name, type(module).__name__, name, _summary(error))
    finally:
        for handle in handles:
            handle.remove()
    if source.kind == "module" and source.name in graph_inputs:  # look inside the graph
        sub = model.get_submodule(source.name)
        inner_args, inner_kwargs = graph_inputs[source.name]
        inner = _search_graph(sub, inner_args, inner_kwargs)  # type: ignore[arg-type]
        if inner is not None:
            prefix = f"{source.name}." if source.name else ""
            return dataclasses.replace(
                inner, module=None if inner.module is None else prefix + inner.module)
    return source


def _with_detail(source: NonFiniteSource, module: nn.Module) -> NonFiniteSource:
    """Mention the module's own non-finite parameters (a diverged update)."""
    bad = [name for name, tensor in module.named_parameters(recurse=False)
           if not all_finite(tensor)]
    if not bad:
        return source
    listed = ", ".join(repr(b) for b in bad[:_MAX_LISTED])
    return dataclasses.replace(source, detail=f"its own {listed} already non-finite")


def _search_graph(graph_module: fx.GraphModule, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> NonFiniteSource | None:
    interpreter = _NodeWatcher(graph_module)
    try:
        if kwargs:
            interpreter.run(*_pytree.arg_tree_leaves(*args, **kwargs), enable_io_processing=False)
        else:
            interpreter.run(*args)
        return None
    except _Found as found:
        return found.source
    except Exception as error:  # noqa: BLE001 - the failure itself is what we report
        node = interpreter.current
        if node is None:
            return NonFiniteSource("error", "", type(graph_module).__name__, None, _summary(error))
        return NonFiniteSource("error", node.name, _operation(graph_module, node),
                               node_module(graph_module, node), _summary(error))


class _NodeWatcher(fx.Interpreter):
    """Runs a graph node by node and stops at the first node with a non-finite output."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.current: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.current = n
        result = super().run_node(n)
        # Stored tensors are not checked on their own: all of them are read at the top of an
        # exported graph, and running statistics may be non-finite without being used.
        if n.op in ("call_function", "call_method", "call_module") and not all_finite(result):
            raise _Found(NonFiniteSource("node", n.name, _operation(self.module, n),
                                         node_module(self.module, n), self._spoilt_inputs(n)))
        return result

    def _spoilt_inputs(self, n: fx.Node) -> str:
        """Mention the node's parameter inputs that are already non-finite."""
        parameters = {name for name, _ in self.module.named_parameters()}
        bad = [str(i.target) for i in n.all_input_nodes
               if i.op == "get_attr" and str(i.target) in parameters and i in self.env
               and not all_finite(self.env[i])]
        if not bad:
            return ""
        return f"its input {', '.join(repr(b) for b in bad[:_MAX_LISTED])} already non-finite"


def _operation(root: nn.Module, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{type(root.get_submodule(str(node.target))).__name__} {node.target!r}"
    if node.op == "get_attr":
        return f"tensor {node.target!r}"
    target = node.target
    if isinstance(target, (str, torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return str(target)  # an ATen overload such as aten.conv2d.default, or a method name
    return str(getattr(target, "__name__", target))


def _stack_path(node: fx.Node) -> str | None:
    """The innermost named module in a node's ``nn_module_stack``."""
    return innermost_module_path(node) or None


def node_module(root: nn.Module, node: fx.Node) -> str | None:
    """The module path a graph node belongs to: its ``nn_module_stack``; for module calls and
    stored tensors without one (e.g. fake quantizers inserted after capture) that of the nearest
    user, then of the nearest input, else the path the node itself names."""
    path = _stack_path(node)
    if path is not None or node.op not in ("call_module", "get_attr"):
        return path
    for neighbour in [*node.users, *node.all_input_nodes]:
        path = _stack_path(neighbour)
        if path is not None:
            return path
    target = str(node.target)
    return target if node.op == "call_module" else target.rpartition(".")[0]


def submodule_owner(model: nn.Module, name: str) -> str | None:
    """The module path that submodule ``name`` of a graph module works for (e.g. the layer
    a fake quantizer inserted after capture quantizes), or ``None``."""
    if isinstance(model, fx.GraphModule):
        for node in model.graph.nodes:
            target = str(node.target)
            if node.op == "call_module" and (name == target or name.startswith(target + ".")):
                module = node_module(model, node)
                if module is not None:
                    return module
    return None


def describe_submodule(model: nn.Module, name: str) -> str:
    """``name`` (a submodule path of ``model``), with the module it belongs to when ``model``
    is a graph module that calls it (e.g. ``'activation_post_process_3' (at module 'conv1')``)."""
    owner = submodule_owner(model, name)
    return repr(name) if owner is None else f"{name!r} (at module {owner!r})"


def non_finite_ranges(model: nn.Module) -> list[str]:
    """Names of the quantization observers / fake quantizers in ``model`` whose range is not
    finite: a NaN ``min_val``/``max_val``, ``min_val = -inf`` or ``max_val = +inf`` (the initial
    ``+inf``/``-inf`` of an observer that has seen nothing yet is fine), or a non-finite
    ``scale`` of a fake quantizer. In the normal case this is a few tensor operations and one
    synchronisation, whatever the number of observers.
    """
    observers, quantizers = [], []
    for name, module in model.named_modules():
        low, high = getattr(module, "min_val", None), getattr(module, "max_val", None)
        if isinstance(low, Tensor) and isinstance(high, Tensor) and low.shape == high.shape:
            observers.append((name, low, high))
        scale = getattr(module, "scale", None)
        if isinstance(scale, Tensor) and hasattr(module, "activation_post_process"):
            quantizers.append((name, scale))
    flags = []
    if observers:
        low = torch.cat([o[1].detach().reshape(-1).float() for o in observers])
        high = torch.cat([o[2].detach().reshape(-1).float() for o in observers])
        flags.append(_bad_range(low, high).any())
    if quantizers:
        scales = torch.cat([q[1].detach().reshape(-1).float() for q in quantizers])
        flags.append((~torch.isfinite(scales)).any())
    if not flags or not bool(torch.stack(flags).any()):
        return []
    owners = {name for name, _ in quantizers}
    bad = [_owner(name, owners) for name, low, high in observers
           if bool(_bad_range(low, high).any())]
    bad += [name for name, scale in quantizers if not all_finite(scale)]
    return sorted(set(bad), key=bad.index)


def _owner(observer: str, quantizers: set[str]) -> str:
    """The fake quantizer an observer belongs to (its parent module), else the observer."""
    parent = observer.rpartition(".")[0]
    return parent if parent in quantizers else observer


def non_finite_parameters(model: nn.Module) -> list[str]:
    """Names of ``model``'s parameters that hold NaN or Inf (empty in the normal case; one
    ``isfinite`` per parameter and one synchronisation)."""
    named = list(model.named_parameters())
    if not named or all_finite([p for _, p in named]):
        return []
    return [name for name, parameter in named if not all_finite(parameter)]


def _summary(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
