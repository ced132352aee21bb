"""Making the third-party model libraries importable next to a CPU build of torch.

``make test`` installs timm and torchvision with ``--no-deps`` into a folder of their own
(``$COMPRESSOR_ZOO_PACKAGES``, default ``.venv/zoo-packages``), so that they can never pull
another torch, and so that nothing else in the environment sees torchvision: its PyPI wheel is
built for CUDA and its compiled operators fail to load on CPU torch, which breaks every import
of torchmetrics (and so of Lightning) in a process that has not prepared for it. This module
prepares a test process: it defines the two operator schemas torchvision registers fake
kernels for (its model code needs nothing else), then puts the folder on ``sys.path``.
transformers is an ordinary test dependency (it does not depend on torch).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
FOLDER = Path(os.environ.get("COMPRESSOR_ZOO_PACKAGES",
                             Path(sys.prefix) / "zoo-packages")).expanduser()
_LIBRARY: torch.library.Library | None = None


def enable() -> None:
    """Make ``timm``, ``torchvision`` and ``transformers`` importable (idempotent).

    Raises:
        ImportError: a package is missing; the message says how to install it.
    """
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = torch.library.Library("torchvision", "DEF")
        _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARY.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
    if str(FOLDER) not in sys.path:
        sys.path.append(str(FOLDER))
    missing = []
    for name in ("timm", "torchvision", "transformers"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"The third-party zoo needs {', '.join(missing)} (looked in {FOLDER} and "
                          "the environment). `make test` installs them; or run `make zoo`.")
