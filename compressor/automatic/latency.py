"""A latency model of the deployed file, measured in ONNX Runtime on this machine.

Per convolution and linear layer, the latency of the layer alone (one ONNX node: ``Conv`` +
``Relu`` in fp32, ``QLinearConv`` in int8; ``Gemm`` / ``QLinearMatMul`` for linear layers) is
measured on its real input shape, batch and thread count over a small grid of kept input and
output widths; layers of the same shape share one measurement. Everything else the network
runs (additions, pooling, quantize/dequantize, session overhead) is fitted from two
measurements of the whole exported network, dense and with half of every group's channels:
``latency = fixed + per_activation * activations + sum(layer latencies)``. Tables are cached
per machine, ONNX Runtime version, precision, batch, threads and layer shapes.
"""

from __future__ import annotations

import copy
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compressor.automatic.costs import Choice, CostModel, Layer
from compressor.utils.cache import cache_key, read_cached, write_cached
from compressor.utils.progress import progress

__all__ = ["LatencyTable", "measure_layer_grid", "measure_models", "export_deployed",
           "GRID", "runtime_version"]

#: Kept fractions of a layer's pruned dimensions at which it is measured.
GRID = (0.25, 0.5, 0.75, 1.0)


def runtime_version() -> str:
    """The ONNX Runtime version (part of every cache key)."""
    import onnxruntime

    return onnxruntime.__version__


@dataclass
class LatencyTable:
    """Measured layer latencies and the fitted remainder of the network.

    Attributes:
        precision: ``"int8"`` or ``"fp32"``.
        batch: Batch size measured.
        threads: ONNX Runtime intra-op threads.
        runtime: ONNX Runtime version.
        layers: Per layer name, ``{(input fraction, output fraction): ms}``.
        fixed_ms: Network time that does not depend on the widths.
        per_activation_ms: Network time per (fraction of the dense) output activations.
        dense_ms: Measured latency of the dense network in this precision.
        reference_ms: Measured latency of the dense fp32 network (what speed-ups refer to).
    """

    precision: str
    batch: int
    threads: int
    runtime: str
    layers: dict[str, dict[tuple[float, float], float]]
    fixed_ms: float = 0.0
    per_activation_ms: float = 0.0
    dense_ms: float = 0.0
    reference_ms: float = 0.0
    checks: list[dict[str, float]] = field(default_factory=list)

    def layer_grids(self) -> dict[str, dict[tuple[float, float], float]]:
        """The measured grid of every layer."""
        return self.layers

    def layer_ms(self, name: str, widths: tuple[float, float]) -> float:
        """Interpolated latency of layer ``name`` at ``(input, output)`` kept fractions."""
        grid = self.layers[name]
        ins = sorted({i for i, _ in grid})
        outs = sorted({o for _, o in grid})
        (i0, i1, ti), (o0, o1, to) = _bracket(ins, widths[0]), _bracket(outs, widths[1])
        low = grid[(i0, o0)] + (grid[(i0, o1)] - grid[(i0, o0)]) * to
        high = grid[(i1, o0)] + (grid[(i1, o1)] - grid[(i1, o0)]) * to
        return low + (high - low) * ti

    def layers_ms(self, costs: CostModel, choice: Choice) -> float:
        """Sum of the layer latencies for ``choice``."""
        return sum(self.layer_ms(layer.name, costs.widths(layer, choice))
                   for layer in costs.layers
                   if layer.name in self.layers and not costs.removed(layer.name, choice))

    def predict(self, costs: CostModel, choice: Choice) -> float:
        """Predicted latency (ms per batch) of the network compacted to ``choice``."""
        activations = costs.activations(choice) / costs.activations(costs.dense())
        return self.fixed_ms + self.per_activation_ms * activations + \
            self.layers_ms(costs, choice)

    def fit_remainder(self, costs: CostModel, points: Sequence[tuple[Choice, float]]) -> None:
        """Fit ``fixed_ms`` and ``per_activation_ms`` to whole-network measurements
        ``(choice, ms)`` (least squares; the per-activation part is kept >= 0)."""
        dense = costs.activations(costs.dense())
        x = np.array([costs.activations(choice) / dense for choice, _ in points])
        y = np.array([ms - self.layers_ms(costs, choice) for choice, ms in points])
        if len(points) >= 2 and np.ptp(x) > 1e-9:
            slope, intercept = np.polyfit(x, y, 1)
        else:
            slope, intercept = 0.0, float(y.mean())
        if slope < 0:
            slope, intercept = 0.0, float(y.mean())
        self.per_activation_ms, self.fixed_ms = float(slope), float(intercept)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"precision": self.precision, "batch": self.batch, "threads": self.threads,
                "runtime": self.runtime, "fixed_ms": self.fixed_ms,
                "per_activation_ms": self.per_activation_ms, "dense_ms": self.dense_ms,
                "reference_ms": self.reference_ms, "checks": self.checks,
                "layers": {name: [[i, o, ms] for (i, o), ms in grid.items()]
                           for name, grid in self.layers.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        """Inverse of :meth:`to_dict`."""
        layers = {name: {(float(i), float(o)): float(ms) for i, o, ms in rows}
                  for name, rows in data["layers"].items()}
        return cls(data["precision"], int(data["batch"]), int(data["threads"]), data["runtime"],
                   layers, float(data["fixed_ms"]), float(data["per_activation_ms"]),
                   float(data["dense_ms"]), float(data["reference_ms"]), list(data["checks"]))

    def plot(self, path: str | Path) -> Path:
        """Plot every layer's latency against its kept output width (PNG)."""
        from compressor.automatic.plots import plot_latency_table

        return plot_latency_table(self, path)


def _bracket(values: list[float], x: float) -> tuple[float, float, float]:
    """Neighbouring grid values around ``x`` and the interpolation weight (clamped)."""
    if len(values) == 1:
        return values[0], values[0], 0.0
    x = min(max(x, values[0]), values[-1])
    for low, high in zip(values, values[1:]):
        if x <= high:
            return low, high, (x - low) / (high - low)
    return values[-2], values[-1], 1.0


def _signature(layer: Layer) -> tuple[Any, ...]:
    return (layer.kind, layer.weight_shape, layer.input_shape, layer.stride, layer.padding,
            layer.dilation, layer.groups)


def measure_layer_grid(costs: CostModel, precision: str, batch: int, threads: int,
                       repeats: int = 15, show_progress: bool = True,
                       cache: bool = True) -> dict[str, dict[tuple[float, float], float]]:
    """Per layer, its ONNX Runtime latency alone at the :data:`GRID` of kept widths of its
    pruned dimensions (unpruned dimensions stay full)."""
    layers = [layer for layer in costs.layers if _pruned_dims(costs, layer) != (False, False)]
    unique: dict[tuple[Any, ...], Layer] = {}
    for layer in layers:
        unique.setdefault(_signature(layer) + (_pruned_dims(costs, layer),), layer)
    key = cache_key("layers", precision, batch, threads, runtime_version(), platform.processor(),
                    platform.machine(), repeats, [list(map(str, k)) for k in unique])
    cached = read_cached("latency", key) if cache else None
    if cached is not None:
        by_signature = {k: {(float(i), float(o)): ms for i, o, ms in rows}
                        for k, rows in cached.items()}
    else:
        by_signature = {}
        for signature, layer in progress(list(unique.items()), "Latency table", len(unique),
                                         show_progress):
            by_signature[repr(signature)] = _measure_one(layer, _pruned_dims(costs, layer),
                                                         precision, batch, threads, repeats)
        if cache:
            write_cached("latency", key, {k: [[i, o, ms] for (i, o), ms in grid.items()]
                                          for k, grid in by_signature.items()})
    return {layer.name: by_signature[repr(_signature(layer) + (_pruned_dims(costs, layer),))]
            for layer in layers}


def _pruned_dims(costs: CostModel, layer: Layer) -> tuple[bool, bool]:
    """Whether the layer's (input, output) channels belong to a pruned group."""
    out = (layer.weight, 0) in costs.owners
    if layer.depthwise:
        return out, out
    return (layer.weight, 1) in costs.owners, out


def _measure_one(layer: Layer, pruned: tuple[bool, bool], precision: str, batch: int,
                 threads: int, repeats: int) -> dict[tuple[float, float], float]:
    from compressor.export.latency import measure_latency

    ins = GRID if pruned[0] else (1.0,)
    outs = GRID if pruned[1] else (1.0,)
    points = [(i, o) for i in ins for o in outs if not layer.depthwise or i == o]
    models = {f"{i}:{o}": _layer_model(layer, i, o, precision, batch) for i, o in points}
    results = measure_latency(models, batch, repeats=repeats, warmup=2, threads=threads)
    grid = {(i, o): results[f"{i}:{o}"].median_ms for i, o in points}
    if layer.depthwise:  # one width for both: spread it over the grid's other axis
        grid.update({(i, o): grid[(o, o)] for i in ins for o in outs})
    return grid


def _width(size: int, fraction: float) -> int:
    return max(1, int(round(size * fraction)))


def _layer_model(layer: Layer, fin: float, fout: float, precision: str, batch: int) -> bytes:
    """A one-layer ONNX model of ``layer`` at the given kept fractions."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    out = _width(layer.weight_shape[0], fout)
    per_group_in = layer.weight_shape[1] if layer.depthwise else _width(layer.weight_shape[1], fin)
    groups = out if layer.depthwise else layer.groups
    channels_in = per_group_in * groups
    spatial = list(layer.input_shape[1:]) if layer.kind == "conv" else []
    if layer.kind == "linear":
        rows = batch * max(1, int(np.prod(layer.input_shape[:-1])))
        input_shape = [rows, channels_in]
    else:
        input_shape = [batch, channels_in, *spatial]
    weight_shape = [out, per_group_in, *layer.weight_shape[2:]]
    int8 = precision == "int8"
    x = helper.make_tensor_value_info("x", TensorProto.UINT8 if int8 else TensorProto.FLOAT,
                                      input_shape)
    y = helper.make_tensor_value_info("y", TensorProto.UINT8 if int8 else TensorProto.FLOAT, None)
    weight = rng.standard_normal(weight_shape).astype(np.float32)
    initializers, nodes = _layer_nodes(layer, weight, groups, int8)
    graph = helper.make_graph(nodes, "layer", [x], [y],
                              [numpy_helper.from_array(a, n) for n, a in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def _layer_nodes(layer: Layer, weight: np.ndarray, groups: int, int8: bool
                 ) -> tuple[dict[str, np.ndarray], list[Any]]:
    from onnx import helper

    out = weight.shape[0]
    init: dict[str, np.ndarray] = {}
    if layer.kind == "conv":
        nd = len(layer.weight_shape) - 2
        padding = list(layer.padding) if len(layer.padding) == nd else [0] * nd
        attrs = {"strides": list(layer.stride), "pads": padding * 2,
                 "dilations": list(layer.dilation), "group": groups}
        if int8:
            init.update(_quant_params(weight, out))
            node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz",
                                                     "b"], ["y"], **attrs)
            return init, [node]
        init.update({"w": weight, "b": np.zeros(out, np.float32)})
        return init, [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs),
                      helper.make_node("Relu", ["c"], ["y"])]
    if int8:
        params = _quant_params(weight, out)
        params["w"] = np.ascontiguousarray(params["w"].T)
        params.pop("b")
        params["ws"], params["wz"] = params["ws"][:1], params["wz"][:1]
        init.update(params)
        return init, [helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys",
                                                         "yz"], ["y"])]
    init.update({"w": weight, "b": np.zeros(out, np.float32)})
    return init, [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]


def _quant_params(weight: np.ndarray, out: int) -> dict[str, np.ndarray]:
    scale = np.maximum(np.abs(weight).reshape(out, -1).max(1), 1e-6) / 127.0
    quantized = np.clip(np.round(weight / scale.reshape(-1, *[1] * (weight.ndim - 1))), -127, 127)
    return {"xs": np.array(0.02, np.float32), "xz": np.array(128, np.uint8),
            "w": quantized.astype(np.int8), "ws": scale.astype(np.float32),
            "wz": np.zeros(out, np.int8), "ys": np.array(0.05, np.float32),
            "yz": np.array(128, np.uint8), "b": np.zeros(out, np.int32)}


def export_deployed(model: nn.Module, example_inputs: torch.Tensor, precision: str,
                    folder: Path, name: str, calibration: Sequence[Any] = ()) -> Path:
    """Export ``model`` as it would be deployed: fp32, or int8 after post-training calibration
    on ``calibration`` batches (default: the example inputs), unverified (for timing)."""
    from compressor.export.onnx_export import export_onnx

    model = copy.deepcopy(model).cpu().eval()
    example_inputs = example_inputs.cpu()
    if precision == "int8":
        from compressor.quantization import calibrate, convert, prepare_ptq

        prepared = prepare_ptq(model, (example_inputs,))
        calibrate(prepared, [c.cpu() for c in calibration] or [example_inputs])
        model = convert(prepared)
    path = folder / f"{name}.onnx"
    export_onnx(model, path, (example_inputs,), verify=False, latency_batches=(),
                write_report=False)
    return path


def measure_models(files: Mapping[str, Path], batch: int, threads: int,
                   repeats: int = 20) -> dict[str, float]:
    """Median ONNX Runtime latency (ms per batch) of exported files, measured interleaved."""
    from compressor.export.latency import measure_latency

    results = measure_latency(dict(files), batch, repeats=repeats, warmup=3, threads=threads)
    return {name: result.median_ms for name, result in results.items()}


def temporary_folder() -> tempfile.TemporaryDirectory[str]:
    """A folder for the exports a latency measurement needs."""
    return tempfile.TemporaryDirectory(prefix="compressor-latency-")


def measure_channel_step(costs: CostModel, precision: str, batch: int, threads: int,
                         repeats: int = 15) -> tuple[int, dict[int, float]]:
    """The channel step ONNX Runtime's kernels run fastest with on this CPU, measured.

    On the most expensive pruned (non-depthwise) convolution, the output width is swept over
    33..64 channels. For steps 16, 8 and 4, the median ratio of the latency at each multiple
    of the step to the latency at the narrowest width that rounds up to it tells whether the
    kernel computes channels in blocks of that size (ratio near 1: rounding up is free). The
    largest such step is returned (4 when none is), with the sweep.
    """
    from compressor.export.latency import measure_latency

    convs = [layer for layer in costs.layers if layer.kind == "conv" and not layer.depthwise
             and (layer.weight, 0) in costs.owners]
    if not convs:
        return 4, {}
    layer = max(convs, key=lambda c: c.positions * int(np.prod(c.weight_shape)))
    widths = list(range(33, 65))
    size = layer.weight_shape[0]
    models = {str(w): _layer_model(layer, 1.0, w / size, precision, batch) for w in widths}
    results = measure_latency(models, batch, repeats=repeats, warmup=2, threads=threads)
    sweep = {w: results[str(w)].median_ms for w in widths}
    for step in (16, 8, 4):
        ratios = [sweep[top] / sweep[top - step + 1] for top in widths
                  if top % step == 0 and top - step + 1 in sweep]
        if ratios and float(np.median(ratios)) <= 1.03:
            return step, sweep
    return 4, sweep
