"""Rendering a run's metrics as a console table and a markdown report."""

from __future__ import annotations

from typing import Any

__all__ = ["report_rows", "render_markdown", "print_report"]

_ROWS: list[tuple[str, str, str]] = [
    # (metrics key, label, format)
    ("model", "Model", "{}"),
    ("data", "Data", "{}"),
    ("epochs", "Epochs", "{}"),
    ("test_acc", "Test accuracy", "{:.2%}"),
    ("test_loss", "Test loss", "{:.4f}"),
    ("best_val_acc", "Best validation accuracy", "{:.2%}"),
    ("parameters", "Parameters", "{:,}"),
    ("macs", "MACs per sample", "{:,}"),
    ("train_seconds_per_epoch", "Training time per epoch (s)", "{:.1f}"),
    ("epoch_seconds_with_validation", "Epoch time incl. validation (s)", "{:.1f}"),
    ("fit_seconds", "Total fit time (s)", "{:.0f}"),
    ("torch_threads", "Torch threads", "{}"),
    ("checkpoint", "Checkpoint", "{}"),
]


def report_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) pairs for the metrics present in ``metrics``."""
    return [(label, fmt.format(metrics[key])) for key, label, fmt in _ROWS
            if metrics.get(key) is not None]


def render_markdown(title: str, metrics: dict[str, Any]) -> str:
    """A markdown report: a title and a two-column table."""
    lines = [f"# {title}", "", "| Metric | Value |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in report_rows(metrics)]
    return "\n".join(lines) + "\n"


def print_report(title: str, metrics: dict[str, Any]) -> None:
    """Print the report as a table on the console."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    for label, value in report_rows(metrics):
        table.add_row(label, value)
    Console().print(table)
