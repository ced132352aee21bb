"""A pretrained-style CNN as users ship it (``x.view(x.size(0), -1)`` after the convolutions,
no batch norm) through all four callbacks in one fit: distillation from its pretrained self,
channel pruning with compaction, QAT and the int8 export."""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from compressor.callbacks import Distillation, ExportONNX, Pruning, QuantizationAwareTraining
from compressor.quantization import quantization_info
from tests.user_models import ViewFlattenNet

from .test_pruning import PlainModule, digits_loader, trainer


def digits_16(batch_size: int = 32, shuffle: bool = False) -> DataLoader:
    """The digits at 16x16, the input size of :class:`ViewFlattenNet`."""
    images, labels = digits_loader().dataset.tensors
    return DataLoader(TensorDataset(F.interpolate(images, size=16, mode="bilinear"), labels),
                      batch_size=batch_size, shuffle=shuffle)


def pretrained() -> ViewFlattenNet:
    """The network after a short plain training, as a user downloads it."""
    pl.seed_everything(0, verbose=False)
    net = ViewFlattenNet()
    trainer(4, []).fit(PlainModule(net), train_dataloaders=digits_16(shuffle=True))
    return net


def accuracy(model, loader) -> float:
    model.eval()
    with torch.no_grad():
        hits = [(model(x).argmax(1) == y).float().mean() for x, y in loader]
    return float(torch.stack(hits).mean())


def test_view_flatten_cnn_runs_distillation_pruning_qat_and_export_in_one_fit(tmp_path):
    net = pretrained()
    teacher = copy.deepcopy(net)
    dense_accuracy = accuracy(copy.deepcopy(net), digits_16())
    distillation = Distillation(teacher, temperature=2.0, alpha=0.5)
    pruning = Pruning("channel", sparsity=0.5, criterion="taylor", schedule="linear", start_epoch=0,
                      end_epoch=1)
    qat = QuantizationAwareTraining(start_epoch=2)
    export = ExportONNX(tmp_path / "cnn.int8.onnx", batch_sizes=())
    module = PlainModule(net)
    trainer(3, [distillation, pruning, qat, export], limit_train_batches=20).fit(
        module, train_dataloaders=digits_16(shuffle=True))

    assert qat.converted and quantization_info(module.net).converted
    pruned = pruning.pruner.model
    assert pruned.conv1.out_channels < 16 and pruned.fc1.out_features < 64  # really removed
    report = export.report
    assert report is not None and report.accepted and report.parity.passed
    assert report.audit.float_compute == 0, report.audit.float_nodes
    assert all(p.is_contiguous() for p in teacher.parameters())  # the plain layout: .view runs
    final = accuracy(module.net, digits_16())
    assert dense_accuracy >= 0.8 and final >= dense_accuracy - 0.1, (dense_accuracy, final)
