"""``ExportReport``: what an export produced and what its verification found."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.export.audit import KernelAudit
from compressor.export.latency import LatencyResult
from compressor.export.parity import ParityResult
from compressor.utils.io import atomic_write_json
from compressor.utils.tables import markdown_table, print_table, text_table

__all__ = ["ExportReport", "format_bytes"]

_MAX_LISTED = 8  # float nodes named in tables (the JSON report lists all)


def format_bytes(size: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


@dataclass
class ExportReport:
    """The result of :func:`compressor.export_onnx`.

    Attributes:
        path: Where the ONNX file is (the requested path, or ``<name>.rejected.onnx`` when
            verification rejected it).
        accepted: False when parity failed and the file was withheld.
        opset: ONNX opset of the default domain.
        dynamic_batch: Whether the first input dimension is symbolic.
        quantization: Scheme read from the graph (``"fp32"``, ``"int8 QDQ (...)"``).
        file_size: Bytes on disk (including external data).
        external_data: Whether weights live in a separate ``.data`` file (models > 2 GB).
        metadata: The ``metadata_props`` written to the file.
        checker: ``"passed"`` (``onnx.checker`` with ``full_check=True``) or ``"skipped"``.
        session: ``"ok"`` when an ONNX Runtime session ran the model, or ``"skipped"``.
        parity: Parity with PyTorch (``None`` when verification was skipped).
        audit: The int8-kernel audit of the ONNX Runtime-optimised graph.
        latency: ONNX Runtime latency per batch size.
        export_seconds: Time spent in ``torch.onnx.export`` and saving.
        report_path: Where this report was written as JSON.
    """

    path: str
    accepted: bool = True
    opset: int | None = None
    dynamic_batch: bool = True
    quantization: str = "fp32"
    file_size: int = 0
    external_data: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    checker: str = "skipped"
    session: str = "skipped"
    parity: ParityResult | None = None
    audit: KernelAudit | None = None
    latency: list[LatencyResult] = field(default_factory=list)
    export_seconds: float = 0.0
    report_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form of the whole report."""
        return {
            "path": self.path, "accepted": self.accepted, "opset": self.opset,
            "dynamic_batch": self.dynamic_batch, "quantization": self.quantization,
            "file_size": self.file_size, "external_data": self.external_data,
            "metadata": dict(self.metadata), "checker": self.checker, "session": self.session,
            "parity": self.parity.to_dict() if self.parity else None,
            "audit": self.audit.to_dict() if self.audit else None,
            "latency": [result.to_dict() for result in self.latency],
            "export_seconds": self.export_seconds, "report_path": self.report_path,
        }

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (atomically) and remember the path."""
        self.report_path = str(path)
        return atomic_write_json(path, self.to_dict())

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for tables."""
        rows = [("File", self.path), ("Accepted", "yes" if self.accepted else "NO (withheld)"),
                ("File size", format_bytes(self.file_size)),
                ("Quantization", self.quantization), ("Opset", str(self.opset)),
                ("Dynamic batch", "yes" if self.dynamic_batch else "no"),
                ("onnx.checker (full)", self.checker), ("ONNX Runtime session", self.session)]
        for key in ("parameters", "macs", "sparsity"):
            if key in self.metadata:
                rows.append((key.capitalize() if key != "macs" else "MACs per sample",
                             self.metadata[key]))
        if self.parity is not None:
            rows.append(("Parity with PyTorch", self.parity.summary()))
        if self.audit is not None:
            rows.append((f"Int8 kernels ({self.audit.optimization_level} graph)",
                         self.audit.summary()))
            float_nodes = [f"{n.name} ({n.op_type}" + (f", {n.module})" if n.module else ")")
                           for n in self.audit.float_nodes]
            if float_nodes:
                shown = "; ".join(float_nodes[:_MAX_LISTED])
                if len(float_nodes) > _MAX_LISTED:
                    shown += f"; ... ({len(float_nodes) - _MAX_LISTED} more in the JSON report)"
                rows.append(("Float convs / matmuls", shown))
        for result in self.latency:
            rows.append((f"ORT latency, batch {result.batch} ({result.threads} thread)",
                         f"{result.median_ms:.3f} ms ({result.per_sample_ms:.3f} ms/sample)"))
        return rows

    def to_markdown(self) -> str:
        """A two-column markdown table."""
        return markdown_table(["Export", ""], self.rows())

    def __str__(self) -> str:
        return text_table(None, self.rows())

    def print(self) -> None:
        """Print the report as a table on the console."""
        print_table(None, self.rows(), title="ONNX export report")
