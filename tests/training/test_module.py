import pytest
import pytorch_lightning as pl
import torch

from compressor.errors import ConfigError
from compressor.models import create_model
from compressor.training import ClassificationModule, OptimizerConfig, SchedulerConfig
from compressor.training.optim import build_optimizer, build_scheduler


def fit_digits(digits, epochs=3, **kwargs):
    pl.seed_everything(0, verbose=False)
    model = create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=(64,))
    module = ClassificationModule(model, 10, (1, 8, 8), **kwargs)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=digits)
    return trainer.test(module, datamodule=digits, verbose=False)[0]


def test_short_fit_on_digits_learns(digits):
    result = fit_digits(digits, optimizer={"lr": 0.05})
    assert result["test/acc"] > 0.85  # chance is 0.10


def test_adamw_also_learns(digits):
    result = fit_digits(digits, optimizer={"name": "adamw", "lr": 3e-3, "weight_decay": 0.01})
    assert result["test/acc"] > 0.85


def test_example_input_array_matches_input_shape():
    module = ClassificationModule(torch.nn.Linear(3, 2), 2, (3,))
    assert module.example_input_array.shape == (2, 3)


def test_invalid_label_smoothing():
    with pytest.raises(ConfigError, match="label_smoothing"):
        ClassificationModule(torch.nn.Linear(3, 2), 2, (3,), label_smoothing=1.5)


def test_unknown_optimizer_rejected():
    with pytest.raises(ValueError, match="sgd"):
        OptimizerConfig(name="lion")


def test_cosine_schedule_with_warmup():
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimizerConfig(lr=1.0))
    scheduler = build_scheduler(optimizer, SchedulerConfig(warmup_epochs=1), steps_per_epoch=10,
                                epochs=5)
    rates = []
    for _ in range(50):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10] == pytest.approx(1.0) and rates[-1] < 0.01
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))


def test_step_schedule():
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimizerConfig(lr=1.0))
    scheduler = build_scheduler(optimizer, SchedulerConfig(name="step", milestones=(2, 4)), 10, 6)
    rates = []
    for _ in range(60):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 1.0 and rates[20] == pytest.approx(0.1) and rates[45] == pytest.approx(0.01)
