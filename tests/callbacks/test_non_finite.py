"""NaN/Inf during a fit with the compression callbacks stop it with a NonFiniteError that names
the step, the active phases, what became non-finite and the first module producing it."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from compressor.callbacks import Distillation, Pruning, QuantizationAwareTraining
from compressor.callbacks.state import STATE_ATTRIBUTE
from compressor.errors import CompressorError, NonFiniteError
from compressor.models import create_model
from tests.distillation.nets import make_batches

from .test_distillation import fit as distil_fit
from .test_pruning import PlainModule, digits_loader, trainer


class Blows(nn.Module):
    """Identity for its first ``after`` training calls, then multiplies by infinity."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
        return x * math.inf if self.calls > self.after else x


class Poisoned(nn.Module):
    """Always returns NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + math.nan


class Net(nn.Module):
    """flatten -> body (Linear) -> act -> ``middle`` -> head (Linear), on 1x8x8 images."""

    def __init__(self, middle: nn.Module | None = None, classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.body = nn.Linear(64, 32)
        self.act = nn.ReLU()
        self.middle = middle if middle is not None else nn.Identity()
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.middle(self.act(self.body(self.flatten(x)))))


class WithLearningRate(PlainModule):
    def __init__(self, model: nn.Module, lr: float) -> None:
        super().__init__(model)
        self.lr = lr

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def resnet():
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=10, in_channels=1, width_mult=0.5)


def assert_cleaned_up(module: pl.LightningModule) -> None:
    assert STATE_ATTRIBUTE not in vars(module)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in module.modules())


def test_pruning_fit_names_step_phase_and_module():
    module = PlainModule(Net(Blows(after=3)))
    pruning = Pruning("unstructured", sparsity=0.5, schedule="one-shot", start_epoch=0,
                      protect_first_last=False)
    with pytest.raises(NonFiniteError, match="training loss") as caught:
        trainer(1, [pruning], limit_train_batches=6).fit(module,
                                                         train_dataloaders=digits_loader())
    error = caught.value
    message = str(error)
    assert "global step 3" in message and "during pruning" in message
    assert "'middle' (Blows)" in message and "learning rate" in message
    assert (error.step, error.phases, error.module) == (3, ("pruning",), "middle")
    assert isinstance(error, CompressorError) and isinstance(error, FloatingPointError)
    assert_cleaned_up(module)


def test_phases_are_listed_in_a_fixed_order_before_any_phase_started():
    module = PlainModule(Net(Blows(after=1)))
    callbacks = [Distillation("self"),
                 Pruning("unstructured", sparsity=0.5, schedule="one-shot", start_epoch=3,
                         protect_first_last=False)]
    with pytest.raises(NonFiniteError, match="global step 1, during distillation"):
        trainer(1, callbacks, limit_train_batches=4).fit(module, train_dataloaders=digits_loader())
    assert_cleaned_up(module)


def test_loss_made_non_finite_outside_the_student_is_said_so():
    class NanLoss(PlainModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * math.nan if self.global_step == 2 else loss

    with pytest.raises(NonFiniteError, match="global step 2.*gives finite outputs"):
        trainer(1, [Pruning("unstructured", sparsity=0.5, protect_first_last=False)],
                limit_train_batches=4).fit(NanLoss(Net()), train_dataloaders=digits_loader())


def test_qat_exploding_learning_rate_names_qat_and_the_module_not_an_assertion():
    module = WithLearningRate(resnet(), lr=1e30)
    qat = QuantizationAwareTraining(start_epoch=0, convert_at_end=False)
    with pytest.raises(NonFiniteError) as caught:
        trainer(1, [qat], limit_train_batches=6).fit(module, train_dataloaders=digits_loader())
    error = caught.value
    assert error.phases == ("QAT",) and error.step == 1
    assert error.module is not None and error.module in dict(resnet().named_modules())
    message = str(error)
    assert "during QAT" in message and f"of module {error.module!r}" in message
    assert f"keep_float=[{error.module!r}]" in message
    assert_cleaned_up(module)


class SpoilObserverRange(PlainModule):
    """After the forward of step 2, one activation observer records an infinite range (the
    loss stays finite)."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.global_step == 2:
            observer = self.net.get_submodule("activation_post_process_0").activation_post_process
            observer.max_val.fill_(math.inf)
        return loss


def test_qat_non_finite_observer_range_names_the_observer():
    qat = QuantizationAwareTraining(start_epoch=0, convert_at_end=False)
    with pytest.raises(NonFiniteError, match=r"quantization range of observer "
                                             r"'activation_post_process_0' \(at module 'conv1'\)"
                                             r" became non-finite .* at global step 2, during QAT"):
        trainer(1, [qat], limit_train_batches=4).fit(SpoilObserverRange(resnet()),
                                                     train_dataloaders=digits_loader())


class SpoilWeight(pl.Callback):
    """After the optimizer step of ``step``, the first weight of the student holds a NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step + 1:
            with torch.no_grad():
                next(pl_module.net.parameters()).view(-1)[0] = math.nan


def test_qat_non_finite_weight_is_reported_before_an_observer_asserts():
    qat = QuantizationAwareTraining(start_epoch=0, convert_at_end=False)
    name = next(name for name, _ in resnet().named_parameters())
    with pytest.raises(NonFiniteError, match=rf"parameter\(s\) '{name}' became non-finite .* at "
                                             r"global step 2, during QAT.*previous optimizer step"):
        trainer(1, [SpoilWeight(1), qat], limit_train_batches=4).fit(
            PlainModule(resnet()), train_dataloaders=digits_loader())


def test_distillation_teacher_output_names_teacher_and_its_module():
    teacher = Net(Poisoned(), classes=3)
    module = PlainModule(Net(classes=3))
    with pytest.raises(NonFiniteError) as caught:
        distil_fit(module, [Distillation(teacher, alpha=0.5)], make_batches(2))
    error = caught.value
    message = str(error)
    assert message.startswith("The teacher output became non-finite (NaN or Inf) at global "
                              "step 0, during distillation.")
    assert "'middle' (Poisoned)" in message and "teacher's weights" in message
    assert error.module == "middle"
    assert not any(p.requires_grad is False for p in teacher.parameters())  # released
    assert_cleaned_up(module)


def test_normal_fit_with_every_callback_is_unaffected():
    module = PlainModule(resnet())
    callbacks = [Distillation("self", alpha=0.5),
                 Pruning("unstructured", sparsity=0.5, schedule="one-shot", start_epoch=0),
                 QuantizationAwareTraining(start_epoch=1, convert_at_end=False)]
    fit = trainer(2, callbacks, limit_train_batches=3, accumulate_grad_batches=2)
    fit.fit(module, train_dataloaders=digits_loader())
    assert fit.global_step == 4 and callbacks[2].prepared
    assert_cleaned_up(module)


DDP_SCRIPT = """
import torch
import pytorch_lightning as pl
from torch.utils.data import DataLoader, TensorDataset

from compressor.callbacks import Pruning
from compressor.models import create_model
from compressor.training import ClassificationModule

torch.manual_seed(0)
model = create_model("resnet8", num_classes=10, in_channels=1, width_mult=0.5)
module = ClassificationModule(model, 10, (1, 8, 8), optimizer={"lr": 1e30})
data = TensorDataset(torch.randn(256, 1, 8, 8), torch.randint(0, 10, (256,)))
trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp",
                     callbacks=[Pruning("unstructured", sparsity=0.5, schedule="one-shot", start_epoch=0)],
                     logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_train_batches=6, limit_val_batches=0)
trainer.fit(module, DataLoader(data, batch_size=32))
"""


@pytest.mark.slow
def test_ddp_fit_stops_on_every_rank_without_hanging(tmp_path):
    script = tmp_path / "ddp_non_finite.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert result.returncode != 0
    # the averaged NaN gradients reach both processes: each raises the same error on its own
    assert result.stderr.count("NonFiniteError: The training loss became non-finite (NaN or "
                               "Inf) at global step 1, during pruning") == 2, result.stderr[-3000:]
