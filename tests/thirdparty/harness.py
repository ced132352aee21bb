"""One third-party model through the ``Pruning`` callback, compaction and ONNX export, exactly as
a user adds the callback to a plain LightningModule; what it measured, for the tests and for
``benchmarks/thirdparty_zoo.py``."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from compressor import export_onnx
from compressor.callbacks import Pruning
from compressor.utils.modes import temporary_mode
from compressor.utils.modules import count_parameters
from tests.thirdparty.zoo import ZOO, build


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a classifier's output (a tensor, a Hugging Face output or a tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    return output[0]


class LogitsOnly(nn.Module):
    """What a user deploys: the network, returning its logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.net(x))


class Classifier(pl.LightningModule):
    """A user's LightningModule that knows nothing about compressor."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.net(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-4)  # bounded steps: random networks stay tame


class OutputProbe(pl.Callback):
    """Records the model's eval-mode output on fixed inputs at the end of one epoch."""

    def __init__(self, inputs: torch.Tensor, epoch: int = 0) -> None:
        self.inputs, self.epoch = inputs, epoch
        self.output: torch.Tensor | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            with temporary_mode(pl_module, False), torch.no_grad():
                self.output = pl_module(self.inputs).clone()


@dataclass
class ZooResult:
    """What one model measured (see :func:`compress`)."""

    name: str
    granularity: str
    parameters: int
    compressed_parameters: int
    output_shape: list[int]
    compressed_output_shape: list[int]
    masked_vs_compacted: float  # relative to the output's magnitude
    onnx_accepted: bool
    onnx_max_abs_diff: float
    excluded: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.compressed_parameters / self.parameters

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


def _relative_difference(expected: torch.Tensor, actual: torch.Tensor) -> float:
    """Largest absolute difference, relative to the largest output when that exceeds 1 (an
    untrained network in eval mode may produce very large logits)."""
    scale = max(1.0, float(expected.abs().max()))
    return float((expected - actual).abs().max()) / scale


def compress(name: str, granularity: str = "channel", sparsity: float = 0.5) -> ZooResult:
    """Train ``name`` for two short epochs with ``Pruning(granularity, sparsity)`` (one shot at
    epoch 0, compaction at its end), then export the compacted model and check it in ONNX
    Runtime."""
    start = time.perf_counter()
    spec, net = ZOO[name], build(name)
    probe_inputs = spec.inputs(2, seed=1)
    with temporary_mode(net, False), torch.no_grad():
        dense_output = logits_of(net(probe_inputs))
    inputs = spec.inputs(8)
    labels = torch.randint(0, dense_output.shape[-1], (8,), generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=4)
    pruning = Pruning(granularity, sparsity=sparsity, criterion="l1", schedule="one-shot", start_epoch=0)
    masked, compacted = OutputProbe(probe_inputs), OutputProbe(probe_inputs)
    parameters = count_parameters(net)
    trainer = pl.Trainer(max_epochs=2, callbacks=[masked, pruning, compacted], logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accelerator="cpu", devices=1)
    trainer.fit(Classifier(net), train_dataloaders=loader)
    assert masked.output is not None and compacted.output is not None
    graph = pruning.pruner.graph if pruning.pruner is not None else None
    excluded = [{"modules": list(e.modules), "reason": e.reason, "channels": e.channels}
                for e in (graph.unexpected_exclusions if graph is not None else [])]
    with tempfile.TemporaryDirectory() as folder:
        report = export_onnx(LogitsOnly(net), Path(folder) / "model.onnx", probe_inputs,
                             latency_batches=(), write_report=False)
    with temporary_mode(net, False), torch.no_grad():
        final_output = logits_of(net(probe_inputs))
    return ZooResult(
        name, granularity, parameters, count_parameters(net), list(dense_output.shape),
        list(final_output.shape), _relative_difference(masked.output, compacted.output),
        report.accepted, report.parity.max_abs_diff if report.parity else float("nan"),
        excluded, time.perf_counter() - start)
