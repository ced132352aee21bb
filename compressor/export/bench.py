"""Side-by-side comparison of ONNX files: size, ONNX Runtime latency at several batch sizes
(interleaved repeats, medians), speed-up against a baseline and the int8-kernel audit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.errors import ConfigError, UnknownNameError
from compressor.export.audit import KernelAudit, audit_int8_kernels
from compressor.export.latency import LatencyResult, measure_latency
from compressor.export.metadata import quantization_scheme
from compressor.export.report import format_bytes
from compressor.export.runtime import create_session, load_onnx, random_inputs
from compressor.utils.checks import check_int
from compressor.utils.tables import markdown_table, print_table

__all__ = ["BenchEntry", "BenchResult", "compare_onnx"]


@dataclass
class BenchEntry:
    """Measurements of one ONNX file."""

    name: str
    path: str
    file_size: int
    quantization: str
    audit: KernelAudit
    latency: dict[int, LatencyResult] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)
    size_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return {"name": self.name, "path": self.path, "file_size": self.file_size,
                "quantization": self.quantization, "audit": self.audit.to_dict(),
                "latency": {str(b): r.to_dict() for b, r in self.latency.items()},
                "speedup_vs_baseline": {str(b): s for b, s in self.speedup.items()},
                "size_ratio_vs_baseline": self.size_ratio}


@dataclass
class BenchResult:
    """The comparison: one entry per file, the baseline's name and the settings."""

    entries: list[BenchEntry]
    baseline: str | None
    batch_sizes: tuple[int, ...]
    repeats: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"baseline": self.baseline, "batch_sizes": list(self.batch_sizes),
                "repeats": self.repeats, "threads": self.threads,
                "models": [entry.to_dict() for entry in self.entries]}

    def header(self) -> list[str]:
        """Column titles of :meth:`rows`."""
        columns = ["Model", "Quantization", "File size"]
        for batch in self.batch_sizes:
            columns.append(f"Latency b{batch} (ms)")
            if self.baseline:
                columns.append(f"Speed-up b{batch}")
        if self.baseline:
            columns.append("Smaller by")
        return columns + ["Int8 convs/matmuls"]

    def rows(self) -> list[list[str]]:
        """One row of formatted cells per file."""
        rows = []
        for entry in self.entries:
            row = [entry.name, entry.quantization, format_bytes(entry.file_size)]
            for batch in self.batch_sizes:
                row.append(f"{entry.latency[batch].median_ms:.3f}")
                if self.baseline:
                    row.append(f"{entry.speedup[batch]:.2f}x")
            if self.baseline:
                row.append(f"{1 / entry.size_ratio:.2f}x" if entry.size_ratio else "-")
            row.append(entry.audit.summary())
            rows.append(row)
        return rows

    def title(self) -> str:
        """How the figures were measured."""
        return (f"ONNX Runtime {_ort_version()}, CPU, {self.threads} intra-op thread(s), median "
                f"of {self.repeats} interleaved runs")

    def to_markdown(self) -> str:
        """A markdown table."""
        return markdown_table(self.header(), self.rows())

    def print(self) -> None:
        """Print the comparison as a console table."""
        header = self.header()
        print_table(header, self.rows(), title=self.title(), right=range(2, len(header) - 1))


def compare_onnx(models: Mapping[str, str | Path], baseline: str | None = None,
                 batch_sizes: Sequence[int] = (1, 32), repeats: int = 30, warmup: int = 3,
                 threads: int = 1, audit_level: str = "extended") -> BenchResult:
    """Measure several ONNX files side by side.

    For each batch size the models run interleaved on the same random inputs (every input
    dimension except the first must be fixed in the files).

    Args:
        models: Name -> ONNX file.
        baseline: Name of the model the speed-ups and size ratios are relative to.
        batch_sizes: Batch sizes to time.
        repeats: Timed runs per model and batch size.
        warmup: Untimed runs per model and batch size.
        threads: ONNX Runtime intra-op threads.
        audit_level: Optimisation level of the int8-kernel audit.
    """
    if not models:
        raise ConfigError("`models` is empty: give at least one name -> ONNX file.")
    if baseline is not None and baseline not in models:
        raise UnknownNameError("baseline", baseline, list(models))
    batches = tuple(check_int("batch_sizes[]", b, minimum=1) for b in batch_sizes)
    if not batches:
        raise ConfigError("`batch_sizes` is empty: give at least one batch size.")
    for name, path in models.items():
        if not Path(path).is_file():
            raise ConfigError(f"ONNX file {str(path)!r} (model {name!r}) does not exist.")
    sessions = {name: create_session(path, threads=threads) for name, path in models.items()}
    entries = {}
    for name, path in models.items():
        proto = load_onnx(path)
        size = sum(p.stat().st_size for p in _files(Path(path), proto))
        entries[name] = BenchEntry(name, str(path), size, quantization_scheme(proto),
                                   audit_int8_kernels(path, audit_level))
    for batch in batches:
        feeds = {name: random_inputs(session, batch) for name, session in sessions.items()}
        results = measure_latency(sessions, feeds=feeds, repeats=repeats, warmup=warmup,
                                  threads=threads)
        for name, result in results.items():
            entries[name].latency[batch] = result
    if baseline is not None:
        base = entries[baseline]
        for entry in entries.values():
            entry.speedup = {b: base.latency[b].median_ms / entry.latency[b].median_ms
                             for b in batches}
            entry.size_ratio = entry.file_size / base.file_size
    return BenchResult(list(entries.values()), baseline, batches, repeats, threads)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _files(path: Path, proto: Any) -> list[Path]:
    """The ONNX file and its external data files."""
    locations = {entry.value for init in proto.graph.initializer
                 for entry in init.external_data if entry.key == "location"}
    return [path] + [path.parent / location for location in sorted(locations)
                     if (path.parent / location).is_file()]
