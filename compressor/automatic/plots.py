"""Pictures of automatic compression: sensitivity curves, the latency table and the chosen
widths (PNG files, written atomically; matplotlib's non-interactive backend)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.utils.io import atomic_write

if TYPE_CHECKING:
    from compressor.automatic.latency import LatencyTable
    from compressor.automatic.sensitivity import Sensitivity

__all__ = ["plot_sensitivity", "plot_latency_table", "plot_widths"]


def _figure(width: float = 7.0, height: float = 4.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(width, height), dpi=110)
    return figure, axes


def _save(figure: Any, path: str | Path) -> Path:
    from matplotlib import pyplot as plt

    target = Path(path)
    with atomic_write(target) as temporary:
        figure.tight_layout()
        figure.savefig(temporary, format=target.suffix.lstrip(".") or "png")
    plt.close(figure)
    return target


def plot_sensitivity(sensitivity: Sensitivity, path: str | Path) -> Path:
    """One curve per group: loss increase against the fraction of its channels removed."""
    figure, axes = _figure()
    for unit, points in sensitivity.curves.items():
        ratios = [0.0] + [p["ratio"] for p in points]
        increase = [0.0] + [p["loss"] - sensitivity.baseline["loss"] for p in points]
        axes.plot(ratios, increase, marker="o", markersize=3, linewidth=1,
                  label=sensitivity.names.get(unit, unit))
    axes.set_xlabel("fraction of the group's channels removed (alone)")
    axes.set_ylabel("validation loss increase")
    axes.set_title("Sensitivity of each channel group")
    if len(sensitivity.curves) <= 16:
        axes.legend(fontsize=6, ncol=2)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_latency_table(table: LatencyTable, path: str | Path) -> Path:
    """Per layer, the measured latency against its kept output width (input width kept)."""
    figure, axes = _figure()
    for layer, grid in table.layer_grids().items():
        widths = sorted({out for _, out in grid})
        full = max(i for i, _ in grid)
        axes.plot(widths, [grid[(full, w)] for w in widths], marker="o", markersize=3,
                  linewidth=1, label=layer)
    axes.set_xlabel("kept fraction of output channels")
    axes.set_ylabel(f"ONNX Runtime ms (batch {table.batch}, {table.precision})")
    axes.set_title(f"Latency table ({table.threads} thread(s), ORT {table.runtime})")
    if len(table.layers) <= 16:
        axes.legend(fontsize=6, ncol=2)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_widths(names: Mapping[str, str], sizes: Mapping[str, int], kept: Mapping[str, int],
                path: str | Path, title: str = "Channels kept per group") -> Path:
    """Bars of the channels each group keeps, over its original width."""
    units = list(sizes)
    figure, axes = _figure(max(6.0, 0.35 * len(units) + 2), 4.0)
    positions = range(len(units))
    axes.bar(positions, [sizes[u] for u in units], color="#dddddd", label="dense")
    axes.bar(positions, [kept[u] for u in units], color="#3b7dd8", label="kept")
    axes.set_xticks(list(positions), [names.get(u, u) for u in units], rotation=70, fontsize=6)
    axes.set_ylabel("channels")
    axes.set_title(title)
    axes.legend(fontsize=7)
    return _save(figure, path)
