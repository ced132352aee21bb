"""``export_onnx``: export a PyTorch model to ONNX, verify the file in ONNX Runtime and report.

The file is written atomically: it is exported into a temporary folder next to the target,
checked, run and compared with PyTorch there, and only then renamed to the requested path.
An export failure leaves no file behind; a parity failure keeps the file as
``<name>.rejected.onnx`` for inspection (never under the requested name), writes the report to
``<name>.report.json`` and raises :class:`~compressor.errors.ParityError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.errors import ConfigError, ExportError, InvalidTypeError, ParityError
from compressor.export.audit import MODULE_SCOPES_KEY, audit_int8_kernels
from compressor.export.latency import measure_latency
from compressor.export.metadata import (
    metadata_props,
    model_statistics,
    onnx_weight_statistics,
    quantization_scheme,
)
from compressor.export.parity import ParityConfig, compare_outputs, output_scales
from compressor.export.report import ExportReport
from compressor.export.runtime import create_session, resize_batch, run_session, session_inputs
from compressor.export.translations import quantized_translations
from compressor.quantization.modes import eval_mode
from compressor.utils.checks import check_choice, check_int
from compressor.utils.diagnose import diagnose_failure
from compressor.utils.inputs import tensor_inputs

__all__ = ["export_onnx", "report_path_for", "rejected_path_for", "EXTERNAL_DATA_THRESHOLD"]

# Protobuf cannot serialise more than 2 GiB; above this many bytes of weights the file gets a
# separate ``<name>.data`` file.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26


def report_path_for(path: str | Path) -> Path:
    """``model.onnx`` -> ``model.report.json`` (where the export report is written)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.report.json")


def rejected_path_for(path: str | Path) -> Path:
    """``model.onnx`` -> ``model.rejected.onnx`` (where a file that failed parity is kept)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rejected.onnx")


def _model_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _device(model: nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def _flatten_outputs(outputs: Any) -> list[Any]:
    leaves = torch.utils._pytree.tree_leaves(outputs)
    return [leaf.detach().cpu().numpy() for leaf in leaves if isinstance(leaf, torch.Tensor)]


def _export_hint(stage: str) -> str:
    if stage == "translate":
        return ("Hints: if the op belongs to a layer that was quantized, keep that layer in float; "
                "otherwise export a submodule that does not use the op, replace it with supported "
                "ops, pass `custom_translation_table={op: onnxscript_function}`, or report it to "
                "PyTorch (component: onnx).")
    return ("Hints: torch.export could not capture the model (data-dependent control flow or "
            "unsupported Python). Rewrite that code with tensor ops / torch.cond, export a "
            "submodule that avoids it, or report it to PyTorch (component: export).")


@contextlib.contextmanager
def _quiet_registration() -> Iterator[None]:
    """The exporter warns about every torchvision op it skips; torchvision is never needed."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _torch_onnx_export(model: nn.Module, inputs: tuple[torch.Tensor, ...], dynamic_batch: bool,
                       opset: int | None, external: bool,
                       custom_translation_table: Mapping[Callable, Callable] | None) -> Any:
    export_inputs = inputs
    dynamic_shapes = None
    if dynamic_batch:
        # torch.export specialises size-1 dimensions, so a batch of one is repeated to two.
        export_inputs = tuple(torch.cat([t, t]) if t.shape[0] == 1 else t for t in inputs)
        batch = torch.export.Dim("batch", min=1)
        dynamic_shapes = tuple({0: batch} for _ in inputs)
    translations = {**quantized_translations(model), **dict(custom_translation_table or {})}
    try:
        with _quiet_registration():
            return torch.onnx.export(
                model, export_inputs, dynamo=True, external_data=external, opset_version=opset,
                dynamic_shapes=dynamic_shapes, verbose=False, optimize=True,
                custom_translation_table=translations or None)
    except Exception as error:  # the exporter raises many types; all become an ExportError
        info = diagnose_failure(error, model, export_inputs)
        where = info.where()
        raise ExportError(f"Cannot export {type(model).__name__} to ONNX: {info.reason}"
                          + (f" ({where})" if where else "") + f". {_export_hint(info.stage)}"
                          ) from error


def _write_metadata(path: Path, stats: dict[str, Any], user: Mapping[str, Any] | None
                    ) -> tuple[Any, dict[str, str]]:
    """Add ``metadata_props`` to the saved file; returns its (weight-less) proto and the props."""
    import onnx

    import compressor

    proto = onnx.load(str(path), load_external_data=False)
    scheme = quantization_scheme(proto)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    stats = {"producer": "compressor", "producer_version": compressor.__version__,
             "torch_version": torch.__version__, "opset": opset, "quantization": scheme, **stats}
    if stats.get("sparsity") is None or stats.get("parameters") is None:
        weights = onnx_weight_statistics(onnx.load(str(path)))
        stats["sparsity"] = stats.get("sparsity") if stats.get("sparsity") is not None \
            else weights["sparsity"]
        stats["parameters"] = stats.get("parameters") or weights["numel"]
    props = metadata_props(stats, user)
    _strip_node_metadata(proto)
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save_model(proto, str(path))
    return proto, props


def _strip_node_metadata(proto: Any) -> None:
    """Drop the exporter's per-node debugging metadata (stack traces with local file paths, FX
    node dumps) except the module scopes, which the int8-kernel audit uses to name layers."""
    for node in proto.graph.node:
        kept = [(p.key, p.value) for p in node.metadata_props if p.key == MODULE_SCOPES_KEY]
        del node.metadata_props[:]
        for key, value in kept:
            node.metadata_props.add(key=key, value=value)


def _files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _move_into_place(folder: Path, name: str, target: Path) -> None:
    """Move the exported file (and its external data, first) from ``folder`` to ``target``."""
    for file in _files_of(folder):
        if file.name != name:
            os.replace(file, target.parent / file.name)
    os.replace(folder / name, target)


def _file_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in _files_of(folder))


def export_onnx(model: nn.Module, path: str | Path, example_inputs: Any, *,
                dynamic_batch: bool = True, opset: int | None = None,
                metadata: Mapping[str, Any] | None = None, verify: bool = True,
                parity_inputs: Any = None, parity: ParityConfig | None = None,
                latency_batches: Sequence[int] = (1, 32), latency_repeats: int = 20,
                audit_level: str = "extended",
                custom_translation_table: Mapping[Callable, Callable] | None = None,
                write_report: bool = True) -> ExportReport:
    """Export ``model`` to ONNX with ``torch.onnx.export(dynamo=True)``, verify and report.

    The model is exported in eval mode and every module's mode is restored afterwards, so the
    caller's model is unchanged. Works for fp32, compacted and PT2E-quantized models (converted
    graph modules export as QDQ with int8 weights).

    Args:
        model: The model to export.
        path: Target ``.onnx`` file (its folder is created).
        example_inputs: A tensor or tuple of tensors: the positional inputs of ``forward``.
        dynamic_batch: Make the first dimension of every input (and output) symbolic.
        opset: ONNX opset of the default domain (``None``: the exporter's default, recorded in
            the report and the metadata).
        metadata: Extra ``metadata_props`` (values are stored as text, non-strings as JSON).
        verify: Run the model in ONNX Runtime: parity with PyTorch, int8-kernel audit and
            latency. ``onnx.checker`` (``full_check=True``) always runs.
        parity_inputs: Inputs for the parity check (default: ``example_inputs``).
        parity: Parity thresholds (see :class:`~compressor.export.parity.ParityConfig`).
        latency_batches: Batch sizes whose ONNX Runtime latency is measured (1 intra-op
            thread, median of ``latency_repeats``); empty to skip. With a fixed batch
            (``dynamic_batch=False``) only the example batch size is measured.
        latency_repeats: Timed runs per batch size.
        audit_level: ONNX Runtime optimisation level of the audited graph (``"extended"``:
            portable, includes every QDQ fusion; ``"all"``: CPU-specific layouts too).
        custom_translation_table: Passed to ``torch.onnx.export`` (ONNX functions for ops the
            exporter cannot translate).
        write_report: Write the report as JSON to ``<name>.report.json`` next to the file.

    Returns:
        The :class:`~compressor.export.report.ExportReport`.

    Raises:
        ExportError: the model cannot be exported (the message names the op / module and gives
            a hint), or the file fails ``onnx.checker`` or does not load in ONNX Runtime. No file
            is written.
        ParityError: ONNX Runtime's outputs differ from PyTorch's beyond ``parity``; the file is
            kept as ``<name>.rejected.onnx`` and the report is written (``error.report``).
    """
    target, inputs, checks, batches = _checked_arguments(
        model, path, example_inputs, parity_inputs, dynamic_batch, opset, latency_batches,
        latency_repeats, audit_level, metadata)
    parity = parity or ParityConfig()
    external = _model_bytes(model) > EXTERNAL_DATA_THRESHOLD
    report = ExportReport(str(target), dynamic_batch=dynamic_batch, external_data=external)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        staged, proto, reference = _stage(model, folder / target.name, inputs, checks, report,
                                          verify, opset, metadata, custom_translation_table)
        session = None
        if verify:
            session = create_session(staged, threads=1, optimization_level="all")
            report.session = "ok"
            report.parity = _parity(session, proto, checks, reference, report.quantization,
                                    parity)
            if not report.parity.passed:
                _reject(folder, target, report, write_report)
        _move_into_place(folder, target.name, target)
        rejected_path_for(target).unlink(missing_ok=True)
        if verify:
            report.audit = audit_int8_kernels(target, audit_level)
            report.latency = _latencies(session, target.stem, inputs, batches, latency_repeats)
        if write_report:
            report.write_json(report_path_for(target))
        return report
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _stage(model: nn.Module, staged: Path, inputs: tuple[torch.Tensor, ...],
           checks: tuple[torch.Tensor, ...], report: ExportReport, verify: bool,
           opset: int | None, metadata: Mapping[str, Any] | None,
           custom_translation_table: Mapping[Callable, Callable] | None) -> tuple[Path, Any, list[Any]]:
    """Export into the staging folder, write the metadata and run ``onnx.checker``; fills the
    report's export figures. Returns the staged file, its proto and PyTorch's reference outputs
    on ``checks`` (empty without ``verify``)."""
    start = time.perf_counter()
    with eval_mode(model), torch.no_grad():
        stats = model_statistics(model, tuple(t[:1] for t in inputs))
        reference = _flatten_outputs(model(*checks)) if verify else []
        program = _torch_onnx_export(model, inputs, report.dynamic_batch, opset,
                                     report.external_data, custom_translation_table)
    program.save(str(staged), external_data=report.external_data)
    proto, props = _write_metadata(staged, stats, metadata)
    report.export_seconds = time.perf_counter() - start
    report.metadata, report.quantization = props, props["quantization"]
    report.opset = int(props["opset"]) if "opset" in props else None
    report.file_size = _file_size(staged.parent)
    _check(staged)
    report.checker = "passed"
    return staged, proto, reference


def _checked_arguments(model: nn.Module, path: str | Path, example_inputs: Any,
                       parity_inputs: Any, dynamic_batch: bool, opset: int | None,
                       latency_batches: Sequence[int], latency_repeats: int, audit_level: str,
                       metadata: Mapping[str, Any] | None,
                       ) -> tuple[Path, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], list[int]]:
    """Validate :func:`export_onnx`'s arguments before any work: the target path, the example
    and parity inputs (on the model's device) and the batch sizes to time."""
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    target = Path(path)
    if target.suffix != ".onnx":
        raise ConfigError(f"`path` must end with .onnx, got {str(path)!r}.")
    device = _device(model)
    inputs = tuple(t.to(device) for t in tensor_inputs("example_inputs", example_inputs))
    checks = tuple(t.to(device) for t in tensor_inputs("parity_inputs", parity_inputs)) \
        if parity_inputs is not None else inputs
    if len(checks) != len(inputs):
        raise ConfigError(f"`parity_inputs` has {len(checks)} tensors, `example_inputs` "
                          f"{len(inputs)}; give the same positional inputs.")
    if dynamic_batch and any(t.dim() == 0 for t in inputs):
        raise ConfigError("`dynamic_batch=True` needs a batch dimension on every input; got a "
                          "scalar input. Pass `dynamic_batch=False`.")
    if opset is not None:
        check_int("opset", opset, minimum=18, hint="The dynamo exporter supports opset >= 18.")
    batches = [check_int("latency_batches[]", b, minimum=1) for b in latency_batches]
    if not dynamic_batch and batches:
        batches = [int(inputs[0].shape[0])]  # a fixed batch runs only at its own size
    check_int("latency_repeats", latency_repeats, minimum=1)
    check_choice("audit_level", audit_level, ("basic", "extended", "all"))
    metadata_props({}, metadata)  # reject reserved or bad keys before any work
    return target, inputs, checks, batches


def _parity(session: Any, proto: Any, inputs: tuple[torch.Tensor, ...], reference: list[Any],
            scheme: str, config: ParityConfig) -> Any:
    """Run ``inputs`` through ONNX Runtime and compare with PyTorch's ``reference`` outputs."""
    actual = run_session(session, session_inputs(session, inputs))
    mode = "fp32" if scheme == "fp32" else "int8"
    return compare_outputs(reference, actual, mode, config, output_scales(proto))


def _latencies(session: Any, name: str, inputs: tuple[torch.Tensor, ...], batches: list[int],
               repeats: int) -> list[Any]:
    """ONNX Runtime latency of ``session`` at each batch size (inputs repeated to size)."""
    feeds = session_inputs(session, inputs)
    return [measure_latency({name: session}, feeds={name: resize_batch(feeds, batch)},
                            repeats=repeats)[name] for batch in batches]


def _check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(f"The exported graph fails onnx.checker (full_check=True): {error}. "
                          "Report it to PyTorch (component: onnx) with the model.") from error


def _reject(folder: Path, target: Path, report: ExportReport, write_report: bool) -> None:
    """Keep a file that failed parity as ``<name>.rejected.onnx``, write the report, raise."""
    reason = report.parity.reason if report.parity is not None else "no parity result"
    rejected = rejected_path_for(target)
    if report.external_data:
        report.path = "(deleted: a rejected file with external data is not kept)"
    else:
        os.replace(folder / target.name, rejected)
        report.path = str(rejected)
    report.accepted = False
    destination = report_path_for(target)
    if write_report:
        report.write_json(destination)
    error = ParityError(
        f"ONNX Runtime's outputs do not match PyTorch's ({reason}); the file was "
        f"not written to {target}. Kept for inspection: {report.path}. "
        + (f"Report: {destination}. " if write_report else "")
        + "Hints: check ops with train/eval differences, or loosen `parity=ParityConfig(...)` if "
          "the difference is expected.")
    error.report = report  # type: ignore[attr-defined]
    raise error
