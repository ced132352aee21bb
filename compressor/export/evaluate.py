"""Accuracy of an exported classifier measured in ONNX Runtime (the deployed model)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from compressor.export.runtime import create_session

__all__ = ["onnx_accuracy"]


def onnx_accuracy(path: str | Path, batches: Iterable[Any], threads: int = 2) -> float:
    """Top-1 accuracy of the ONNX classifier at ``path`` over ``(inputs, labels)`` batches.

    Args:
        path: An ONNX file with one input and logits as first output.
        batches: Iterable of ``(inputs, labels)`` tensors or arrays (e.g. a test DataLoader).
        threads: ONNX Runtime intra-op threads.
    """
    session = create_session(path, threads=threads)
    name = session.get_inputs()[0].name
    correct = total = 0
    for inputs, labels in batches:
        logits = session.run(None, {name: np.asarray(inputs, dtype=np.float32)})[0]
        correct += int((logits.argmax(axis=1) == np.asarray(labels)).sum())
        total += len(labels)
    return correct / total if total else 0.0
