import json

import onnxruntime as ort
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from compressor.callbacks import ExportONNX
from compressor.errors import ConfigError, InvalidTypeError
from compressor.models import create_model
from compressor.quantization import convert, prepare_qat, set_observers, set_qat_training
from compressor.training import ClassificationModule
from compressor.utils.inputs import batch_inputs


def _trainer(*callbacks, **kwargs):
    options = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, **kwargs}
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=list(callbacks), **options)


class _Replace(pl.Callback):
    """Replaces the model at the end of training, as the QAT callback's convert does."""

    def on_train_end(self, trainer, pl_module):
        pl_module.model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


def test_exports_classification_module_after_fit(digits, tmp_path):
    model = create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=(16,))
    module = ClassificationModule(model, 10, (1, 8, 8))
    callback = ExportONNX(tmp_path / "digits.onnx", batch_sizes=(1, 4))
    _trainer(callback).fit(module, datamodule=digits)
    report = callback.report
    assert report.accepted and report.parity.passed and (tmp_path / "digits.onnx").is_file()
    assert report.parity.samples == 8  # the first rows of the first training batch
    assert [r.batch for r in report.latency] == [1, 4]
    assert report.metadata["trained_epochs"] == "1"
    assert json.loads((tmp_path / "digits.report.json").read_text())["accepted"] is True


def test_export_sees_the_model_replaced_in_on_train_end(digits, tmp_path):
    model = create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=(16,))
    module = ClassificationModule(model, 10, (1, 8, 8))
    callback = ExportONNX(tmp_path / "m.onnx", batch_sizes=())
    _trainer(callback, _Replace()).fit(module, datamodule=digits)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    (output,) = session.run(None, {session.get_inputs()[0].name: torch.randn(2, 1, 8, 8).numpy()})
    assert output.shape == (2, 3)


class _Pairs(Dataset):
    def __init__(self, as_dict_key="x"):
        self.key = as_dict_key
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 12, generator=generator)
        self.y = torch.randint(0, 3, (32,), generator=generator)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {self.key: self.x[index], "label": self.y[index]}


class _DictModule(pl.LightningModule):
    """A minimal custom LightningModule: dict batches, no example_input_array."""

    def __init__(self, key="x"):
        super().__init__()
        self.key = key
        self.encoder = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.encoder(batch[self.key]), batch["label"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(_Pairs(self.key), batch_size=4)


def test_exports_custom_lightning_module_with_dict_batches(tmp_path):
    callback = ExportONNX(tmp_path / "custom.onnx", batch_sizes=(2,))
    _trainer(callback).fit(_DictModule())
    assert callback.report.accepted and callback.report.parity.samples == 4
    assert callback.report.audit.float_compute == 2


def test_unknown_batch_layout_is_a_clear_error(tmp_path):
    callback = ExportONNX(tmp_path / "custom.onnx")
    with pytest.raises(ConfigError, match=r"keys \['features', 'label'\].*example_inputs="):
        _trainer(callback).fit(_DictModule("features"))


def test_given_example_inputs_are_used(tmp_path):
    callback = ExportONNX(tmp_path / "custom.onnx", example_inputs=torch.randn(5, 12),
                          batch_sizes=())
    _trainer(callback).fit(_DictModule("features"))
    assert callback.report.parity.samples == 5


def test_batch_inputs_layouts():
    x = torch.randn(2, 3)
    assert batch_inputs(x) is x
    assert batch_inputs((x, torch.zeros(2))) is x
    assert batch_inputs([x]) is x
    assert batch_inputs({"images": x, "labels": 0}) is x
    with pytest.raises(ConfigError, match="str"):
        batch_inputs("text")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"path": "model.pt"}, ConfigError, "ending with .onnx"),
    ({"example_inputs": [1]}, InvalidTypeError, "example_inputs"),
    ({"student": 3}, InvalidTypeError, "student"),
    ({"batch_sizes": (0,)}, ConfigError, "batch_sizes"),
    ({"opset": 9}, ConfigError, "opset"),
    ({"parity": 3}, InvalidTypeError, "ParityConfig"),
    ({"parity": {"atoll": 1}}, ConfigError, "did you mean 'atol'"),
])
def test_constructor_validates_arguments(kwargs, error, match):
    arguments = {"path": "model.onnx", **kwargs}
    with pytest.raises(error, match=match):
        ExportONNX(**arguments)


class _QuantizeAtEnd(pl.Callback):
    """QAT in its simplest form, with the library functions: prepare in setup, keep the graph
    in train mode during training, convert in on_train_end."""

    def setup(self, trainer, pl_module, stage):
        pl_module.model = prepare_qat(pl_module.model, torch.randn(4, 1, 8, 8))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        set_qat_training(pl_module.model, True)

    def on_train_end(self, trainer, pl_module):
        set_observers(pl_module.model, False)
        pl_module.model = convert(pl_module.model)


def test_exports_the_int8_model_converted_at_the_end_of_training(digits, tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    module = ClassificationModule(model, 10, (1, 8, 8))
    callback = ExportONNX(tmp_path / "int8.onnx", batch_sizes=())
    _trainer(callback, _QuantizeAtEnd(), limit_val_batches=0).fit(module, datamodule=digits)
    report = callback.report
    assert report.quantization == "int8 QDQ (s8 per-channel weights, u8 activations)"
    assert report.accepted and report.parity.mode == "int8" and report.parity.passed
    assert report.audit.float_compute == 0 and report.audit.int8_compute == 2
