"""Rendering a run's metrics (one column per stage) as a console table and a markdown report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compressor.utils.tables import markdown_table, print_table

__all__ = ["report_rows", "render_markdown", "print_report"]

_ROWS: list[tuple[str, str, str]] = [
    # (metrics key, label, format)
    ("epochs", "Epochs", "{}"),
    ("test_acc", "Test accuracy (PyTorch)", "{:.2%}"),
    ("onnx_test_acc", "Test accuracy (ONNX Runtime)", "{:.2%}"),
    ("test_loss", "Test loss", "{:.4f}"),
    ("best_val_acc", "Best validation accuracy", "{:.2%}"),
    ("parameters", "Parameters", "{:,}"),
    ("macs", "MACs per sample", "{:,}"),
    ("weight_sparsity", "Zero weights (conv/linear)", "{:.1%}"),
    ("train_seconds_per_epoch", "Training time per epoch (s)", "{:.1f}"),
    ("epoch_seconds_with_validation", "Epoch time incl. validation (s)", "{:.1f}"),
    ("fit_seconds", "Total fit time (s)", "{:.0f}"),
    ("checkpoint", "Checkpoint", "{}"),
]


def report_rows(stages: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """``(label, one formatted value per stage)`` for every metric some stage has."""
    rows = []
    for key, label, fmt in _ROWS:
        if any(metrics.get(key) is not None for metrics in stages.values()):
            rows.append((label, [fmt.format(m[key]) if m.get(key) is not None else ""
                                 for m in stages.values()]))
    return rows


def render_markdown(title: str, stages: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown report: a title and a table with one column per stage."""
    rows = [[label, *values] for label, values in report_rows(stages)]
    return f"# {title}\n\n" + markdown_table(["Metric", *stages], rows)


def print_report(title: str, stages: Mapping[str, Mapping[str, Any]]) -> None:
    """Print the report as a table on the console."""
    rows = [[label, *values] for label, values in report_rows(stages)]
    print_table(["Metric", *stages], rows, title=title, right=range(1, len(stages) + 1))
