"""ONNX Runtime sessions and inputs: one place that decides threads, optimisation level and how
random or example inputs are fed to an ONNX file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compressor.errors import ExportError
from compressor.utils.checks import check_choice, check_int

__all__ = ["OPTIMIZATION_LEVELS", "load_onnx", "create_session", "session_inputs", "random_inputs",
           "resize_batch", "run_session"]

# ``"extended"`` applies every hardware-independent fusion, including QDQ -> QLinearConv/QGemm/
# QLinearAdd/...; ``"all"`` adds layout transformations (NCHWc float convolutions, NHWC int8
# convolutions) that depend on the CPU the session runs on.
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def _level(name: str) -> Any:
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    return levels[check_choice("optimization_level", name, OPTIMIZATION_LEVELS)]


def load_onnx(model: str | Path | bytes, weights: bool = False) -> Any:
    """Load an ``onnx.ModelProto`` from a file or bytes (external weights only if ``weights``).

    Raises:
        ExportError: the file is missing or is not an ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        if isinstance(model, bytes):
            return onnx.load_from_string(model)
        return onnx.load(str(model), load_external_data=weights)
    except (OSError, DecodeError) as error:
        what = "the given bytes" if isinstance(model, bytes) else str(model)
        raise ExportError(f"Cannot read an ONNX model from {what}: {error}") from error


def create_session(model: str | Path | bytes, *, threads: int = 1, optimization_level: str = "all",
                   optimized_model_path: str | Path | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU execution provider.

    Args:
        model: Path of an ONNX file, or its serialised bytes.
        threads: Intra-op threads (1 gives stable, comparable latencies). Inter-op parallelism
            is off (sequential execution).
        optimization_level: One of :data:`OPTIMIZATION_LEVELS`.
        optimized_model_path: If given, ONNX Runtime writes the optimised graph there.

    Raises:
        ExportError: ONNX Runtime cannot load the model (the message carries its reason).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = check_int("threads", threads, minimum=1)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _level(optimization_level)
    options.log_severity_level = 3  # errors only: the layout-transformation notice is expected
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises several unrelated exception types
        what = "the model" if isinstance(model, bytes) else str(model)
        raise ExportError(f"ONNX Runtime could not load {what}: {error}") from error


def _numpy_dtype(onnx_type: str) -> np.dtype:
    names = {"tensor(float)": np.float32, "tensor(double)": np.float64,
             "tensor(float16)": np.float16, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
             "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
    if onnx_type not in names:
        raise ExportError(f"Cannot make inputs of ONNX type {onnx_type!r}; pass inputs explicitly.")
    return np.dtype(names[onnx_type])


def random_inputs(session: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for every input of ``session`` with the first (batch) dimension set to
    ``batch``; the other dimensions must be fixed in the model.

    Raises:
        ExportError: an input has a symbolic dimension other than the first.
    """
    check_int("batch", batch, minimum=1)
    generator = np.random.default_rng(seed)
    feeds = {}
    for node in session.get_inputs():
        shape = list(node.shape)
        if not shape:
            raise ExportError(f"Input {node.name!r} is a scalar; pass inputs explicitly.")
        rest = shape[1:]
        if any(not isinstance(d, int) for d in rest):
            raise ExportError(f"Input {node.name!r} has symbolic dimensions {shape} besides the "
                              "batch; pass example inputs explicitly.")
        dtype = _numpy_dtype(node.type)
        if np.issubdtype(dtype, np.floating):
            data = generator.standard_normal((batch, *rest)).astype(dtype)
        else:
            data = generator.integers(0, 2, (batch, *rest)).astype(dtype)
        feeds[node.name] = data
    return feeds


def session_inputs(session: Any, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
    """Map positional inputs (tensors or arrays) to ``session``'s input names, in order.

    Raises:
        ExportError: the number of inputs does not match the model's.
    """
    names = [node.name for node in session.get_inputs()]
    if len(names) != len(inputs):
        raise ExportError(f"The ONNX model has {len(names)} input(s) ({', '.join(names)}) but "
                          f"{len(inputs)} were given.")
    return {name: _to_numpy(value) for name, value in zip(names, inputs, strict=True)}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def resize_batch(feeds: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """Repeat (or cut) every input along its first dimension to ``batch`` rows."""
    check_int("batch", batch, minimum=1)
    resized = {}
    for name, array in feeds.items():
        reps = -(-batch // array.shape[0])
        resized[name] = np.ascontiguousarray(np.concatenate([array] * reps, axis=0)[:batch])
    return resized


def run_session(session: Any, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``session`` on ``feeds`` and return every output."""
    return list(session.run(None, dict(feeds)))
