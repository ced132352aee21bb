"""ONNX Runtime latency, measured side by side: for each repeat every model runs once (in a
rotating order), so that drifts of the machine's speed affect all models alike; medians are
reported."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compressor.errors import ConfigError
from compressor.export.runtime import create_session, random_inputs, run_session
from compressor.utils.checks import check_int

__all__ = ["LatencyResult", "measure_latency"]


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one model at one batch size (milliseconds per batch)."""

    name: str
    batch: int
    median_ms: float
    min_ms: float
    repeats: int
    threads: int

    @property
    def per_sample_ms(self) -> float:
        """Median milliseconds per sample."""
        return self.median_ms / self.batch

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (plus ``per_sample_ms``)."""
        return {**asdict(self), "per_sample_ms": self.per_sample_ms}


def measure_latency(models: Mapping[str, str | Path | bytes | Any], batch: int = 1, *,
                    feeds: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                    repeats: int = 30, warmup: int = 3, threads: int = 1,
                    optimization_level: str = "all", seed: int = 0) -> dict[str, LatencyResult]:
    """Median ONNX Runtime latency of several models, measured interleaved.

    Each model gets its own session (CPU, ``threads`` intra-op threads, sequential execution).
    After ``warmup`` untimed runs of every model, each of the ``repeats`` rounds times one run
    of every model; the order of the models rotates from round to round.

    Args:
        models: Name -> ONNX file path, serialised model bytes or an existing
            ``InferenceSession`` (used as is, whatever its options).
        batch: Batch size of the random inputs (ignored for models given in ``feeds``).
        feeds: Optional name -> input feed (input name -> array) per model; models not listed
            get random inputs with first dimension ``batch`` and the model's other dimensions.
        repeats: Timed runs per model.
        warmup: Untimed runs per model before timing.
        threads: Intra-op threads of the sessions this function creates.
        optimization_level: ONNX Runtime graph optimisation level of those sessions
            (``"all"`` is what a deployed model gets by default).
        seed: Seed of the random inputs.

    Returns:
        Name -> :class:`LatencyResult`, in the order of ``models``.
    """
    if not models:
        raise ConfigError("`models` is empty: give at least one name -> ONNX model.")
    check_int("repeats", repeats, minimum=1)
    check_int("warmup", warmup, minimum=0)
    check_int("batch", batch, minimum=1)
    sessions = {name: model if hasattr(model, "run") and hasattr(model, "get_inputs")
                else create_session(model, threads=threads, optimization_level=optimization_level)
                for name, model in models.items()}
    given = dict(feeds or {})
    unknown = sorted(set(given) - set(sessions))
    if unknown:
        raise ConfigError(f"`feeds` names unknown models {unknown}; models: {sorted(sessions)}.")
    inputs = {name: dict(given[name]) if name in given else random_inputs(session, batch, seed)
              for name, session in sessions.items()}
    for _ in range(warmup):
        for name, session in sessions.items():
            run_session(session, inputs[name])
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    names = list(sessions)
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            run_session(sessions[name], inputs[name])
            samples[name].append((time.perf_counter() - start) * 1000.0)
    return {name: LatencyResult(name, _batch_of(inputs[name]), statistics.median(samples[name]),
                                min(samples[name]), repeats, threads)
            for name in names}


def _batch_of(feed: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feed.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1
