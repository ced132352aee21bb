"""The Pruning callback inside Trainer.fit: schedules, compaction mid-training, resume."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from compressor.callbacks import Pruning
from compressor.errors import ConfigError
from compressor.models import create_model
from compressor.training import ClassificationModule


class PlainModule(pl.LightningModule):
    """A user module that knows nothing about compressor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.net = model

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)


def digits_loader(batch_size=64, shuffle=False):
    from compressor.data import DigitsDataModule

    data = DigitsDataModule()
    data.setup()
    train = data.dataset("train")
    return DataLoader(TensorDataset(train.images, train.labels), batch_size=batch_size,
                      shuffle=shuffle)


def trainer(epochs, callbacks, **kwargs):
    return pl.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
                      **kwargs)


def resnet():
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=10, in_channels=1, width_mult=0.5)


def test_gradual_channel_pruning_compacts_mid_training(digits):
    model = resnet()
    module = ClassificationModule(model, 10, (1, 8, 8), optimizer={"lr": 0.05})
    pruning = Pruning("channel", sparsity=0.5, criterion="taylor", schedule="cubic", start_epoch=0,
                      end_epoch=2)
    fit = trainer(4, [pruning], limit_train_batches=10, limit_val_batches=1)
    fit.fit(module, datamodule=digits)
    assert pruning.compacted
    assert model.conv1.out_channels == 4 and model.fc.in_features == 16
    assert fit.test(module, datamodule=digits, verbose=False)[0]["test/acc"] > 0.5
    optimizer = fit.optimizers[0]
    params = {id(p) for p in model.parameters()}
    assert all(id(p) in params for g in optimizer.param_groups for p in g["params"])


def test_unstructured_by_steps_on_a_plain_module():
    model = create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=(64, 32))
    module = PlainModule(model)
    pruning = Pruning("unstructured", sparsity=0.8, schedule="linear", start_step=0, end_step=20,
                      frequency=5, protect_first_last=False)
    fit = trainer(2, [pruning])
    fit.fit(module, train_dataloaders=digits_loader())
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.8, abs=1e-3)
    assert float(fit.callback_metrics["pruning/sparsity"]) == pytest.approx(0.8, abs=1e-3)
    assert pruning.last_event == 20


def test_one_shot_at_initialisation_scores_calibration_batches():
    model = resnet()
    module = PlainModule(model)
    pruning = Pruning("channel", sparsity=0.5, criterion="taylor", schedule="one-shot", start_epoch=0,
                      calibration_batches=2, compact=False,
                      example_inputs=torch.randn(2, 1, 8, 8))
    fit = trainer(1, [pruning], limit_train_batches=1)
    fit.fit(module, train_dataloaders=digits_loader())
    assert pruning.pruner is not None and pruning.pruner.status().sparsity == pytest.approx(0.5)
    assert (model.conv1.weight.flatten(1) == 0).all(1).sum() == 4


def final_masks(model):
    return {n: (p == 0) for n, p in model.named_parameters()}


def test_resume_mid_schedule_gives_the_same_masks(tmp_path):
    def run(ckpt=None, callbacks=()):
        model = create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=(64, 32))
        pruning = Pruning("unstructured", sparsity=0.75, schedule="cubic", start_epoch=0, end_epoch=3)
        fit = trainer(5, [pruning, *callbacks])
        fit.fit(PlainModule(model), train_dataloaders=digits_loader(), ckpt_path=ckpt)
        return model

    torch.manual_seed(0)
    saver = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1,
                            filename="{epoch}")
    uninterrupted = run(callbacks=[saver])
    torch.manual_seed(1)
    resumed = run(ckpt=str(tmp_path / "epoch=1.ckpt"))
    for name, mask in final_masks(uninterrupted).items():
        assert torch.equal(mask, final_masks(resumed)[name]), name
    for (name, a), (_, b) in zip(uninterrupted.named_parameters(), resumed.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_resume_after_compaction_replays_history(tmp_path):
    def run(ckpt=None, callbacks=()):
        model = resnet()
        pruning = Pruning("channel", sparsity=0.5, schedule="linear", start_epoch=0, end_epoch=1,
                          example_inputs=torch.randn(2, 1, 8, 8))
        fit = trainer(4, [pruning, *callbacks], limit_train_batches=4)
        fit.fit(PlainModule(model), train_dataloaders=digits_loader(), ckpt_path=ckpt)
        return model, pruning

    torch.manual_seed(0)
    saver = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    uninterrupted, _ = run(callbacks=[saver])
    torch.manual_seed(0)
    resumed, pruning = run(ckpt=str(tmp_path / "epoch=2.ckpt"))
    assert pruning.compacted and resumed.conv1.out_channels == 4
    for (name, a), (_, b) in zip(uninterrupted.named_parameters(), resumed.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


class ValidatingModule(PlainModule):
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))


def test_cached_eval_biases_survive_head_pruning_validation_and_taylor_calibration():
    """A model with a train() override that clears eval-mode caches (timm's LeViT pattern)
    trains on after head compaction, with validation before and after it."""
    from tests.user_models import CachedBiasTransformer

    torch.manual_seed(0)
    model = CachedBiasTransformer()
    data = TensorDataset(torch.randn(16, 1, 12, 12), torch.randint(0, 5, (16,)))
    loader = DataLoader(data, batch_size=8)
    pruning = Pruning("head", sparsity=0.5, criterion="taylor", schedule="linear", start_epoch=0,
                      end_epoch=1, calibration_batches=1)
    fit = trainer(3, [pruning], limit_val_batches=1)
    fit.fit(ValidatingModule(model), train_dataloaders=loader, val_dataloaders=loader)
    assert pruning.compacted and model.blocks[0]["attn"].num_heads == 2
    model.eval()
    with torch.no_grad():
        cached = model(data.tensors[0])
    model.train()
    with torch.no_grad():
        assert torch.allclose(model(data.tensors[0]), cached, atol=1e-6)


class TwoModels(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.encoder, self.decoder = nn.Linear(4, 4), nn.Linear(4, 2)


def test_ambiguous_student_is_rejected():
    with pytest.raises(ConfigError, match="several submodules with parameters \\('encoder', 'decoder'\\)"):
        Pruning("unstructured", sparsity=0.5).setup(pl.Trainer(logger=False), TwoModels(), "fit")


@pytest.mark.parametrize("kwargs, match", [
    ({"start_epoch": 0, "end_step": 10}, "not both"),
    ({"granularity": "n:m", "schedule": "cubic", "end_epoch": 3}, "one-shot"),
    ({"sparsity": 1.2}, "sparsity"),
    ({"schedule": "cubic", "start_epoch": 4, "end_epoch": 2}, "must not be before"),
    ({"calibration_batches": -1}, "calibration_batches"),
])
def test_bad_arguments(kwargs, match):
    arguments = {"granularity": "unstructured", "sparsity": 0.5} | kwargs
    with pytest.raises(ConfigError, match=match):
        Pruning(**arguments)
