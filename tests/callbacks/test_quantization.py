"""The QuantizationAwareTraining callback inside Trainer.fit, alone and with the others."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from compressor.callbacks import Distillation, ExportONNX, Pruning, QuantizationAwareTraining
from compressor.errors import CompositionError, ConfigError
from compressor.models import create_model
from compressor.quantization import quantization_info

from .test_pruning import PlainModule, digits_loader, trainer


def resnet():
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=10, in_channels=1, width_mult=0.5)


def test_qat_prepares_freezes_converts_and_exports(tmp_path):
    module = PlainModule(resnet())
    qat = QuantizationAwareTraining(start_epoch=1, freeze_bn_epoch=2, freeze_observer_epoch=2)
    export = ExportONNX(tmp_path / "model.onnx", batch_sizes=())
    saver = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    fit = trainer(3, [export, qat, saver], limit_train_batches=6)
    fit.fit(module, train_dataloaders=digits_loader())
    info = quantization_info(module.net)
    assert qat.converted and info.converted
    assert qat.bn_frozen and qat.observers_frozen
    report = export.report
    assert report is not None and report.accepted
    assert report.audit.float_compute == 0 and report.audit.int8_compute > 0
    # the last checkpoint (written when training ends) holds the trainable QAT state
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=False)
    state = checkpoint["callbacks"][qat.state_key]
    assert state["prepared"] and not state["converted"]
    assert any("activation_post_process" in key for key in checkpoint["state_dict"])


def test_masks_survive_qat_and_conversion():
    model = resnet()
    pruning = Pruning("unstructured", sparsity=0.6, schedule="one-shot", start_epoch=0)
    qat = QuantizationAwareTraining(start_epoch=1)
    fit = trainer(2, [qat, pruning], limit_train_batches=6)
    fit.fit(PlainModule(model), train_dataloaders=digits_loader())
    masks = pruning.pruner.masks.masks
    assert masks
    int8 = [t for t in vars(fit.lightning_module.net).values()
            if isinstance(t, torch.Tensor) and t.dtype == torch.int8]
    int8 += [t for _, t in fit.lightning_module.net.named_buffers() if t.dtype == torch.int8]
    for name, keep in masks.items():
        candidates = [t for t in int8 if t.shape == keep.shape]
        assert any(bool((t[~keep] == 0).all()) for t in candidates), name


def test_resume_during_qat_equals_the_uninterrupted_run(tmp_path):
    def run(ckpt=None, callbacks=()):
        model = resnet()
        qat = QuantizationAwareTraining(start_epoch=1, freeze_bn_epoch=2, convert_at_end=False)
        fit = trainer(3, [qat, *callbacks], limit_train_batches=5)
        fit.fit(PlainModule(model), train_dataloaders=digits_loader(), ckpt_path=ckpt)
        return fit.lightning_module.net, qat

    saver = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    uninterrupted, _ = run(callbacks=[saver])
    resumed, qat = run(ckpt=str(tmp_path / "epoch=1.ckpt"))
    assert qat.prepared and qat.bn_frozen
    expected = uninterrupted.state_dict()
    for name, value in resumed.state_dict().items():
        assert torch.allclose(value.float(), expected[name].float(), atol=1e-6), name


def test_compaction_after_qat_start_is_rejected_at_setup():
    pruning = Pruning("channel", sparsity=0.5, schedule="linear", start_epoch=0, end_epoch=2)
    qat = QuantizationAwareTraining(start_epoch=2)
    fit = trainer(3, [qat, pruning])
    with pytest.raises(CompositionError, match="start_epoch to at least 3"):
        fit.fit(PlainModule(resnet()), train_dataloaders=digits_loader())


def test_callback_order_does_not_matter():
    def run(order):
        pl.seed_everything(0, verbose=False)
        model = resnet()
        callbacks = {
            "prune": Pruning("channel", sparsity=0.5, schedule="linear", start_epoch=0, end_epoch=1,
                             example_inputs=torch.randn(2, 1, 8, 8)),
            "qat": QuantizationAwareTraining(start_epoch=2, freeze_bn_epoch=2,
                                             convert_at_end=False,
                                             example_inputs=torch.randn(2, 1, 8, 8)),
            "distil": Distillation("self", alpha=0.5),
        }
        fit = trainer(3, [callbacks[name] for name in order], limit_train_batches=4)
        fit.fit(PlainModule(model), train_dataloaders=digits_loader())
        return fit.lightning_module.net.state_dict()

    first = run(["prune", "qat", "distil"])
    for order in (["qat", "distil", "prune"], ["distil", "prune", "qat"]):
        other = run(order)
        assert first.keys() == other.keys()
        for name, value in first.items():
            assert torch.equal(value, other[name]), (order, name)


class TwoParts(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)


@pytest.mark.parametrize("kwargs, match", [
    ({"start_epoch": 1, "start_step": 3}, "not both"),
    ({"start_epoch": 3, "freeze_bn_epoch": 1}, "must not be before the QAT start"),
    ({"start_epoch": -1}, "start_epoch"),
    ({"keep_float": [""]}, "keep_float"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ConfigError, TypeError), match=match):
        QuantizationAwareTraining(**kwargs)


def test_student_must_be_a_submodule():
    qat = QuantizationAwareTraining(student="")
    with pytest.raises(ConfigError, match="must be a submodule"):
        qat.setup(pl.Trainer(logger=False), TwoParts(), "fit")


def test_qat_from_the_start_validates_before_the_first_step(digits):
    from compressor.training import ClassificationModule

    module = ClassificationModule(resnet(), 10, (1, 8, 8), optimizer={"lr": 0.01})
    qat = QuantizationAwareTraining(start_epoch=0, convert_at_end=False)
    fit = trainer(1, [qat], limit_train_batches=3, limit_val_batches=2, num_sanity_val_steps=2)
    fit.fit(module, datamodule=digits)  # sanity validation runs before any range was observed
    assert qat.prepared and "val/acc" in fit.callback_metrics
