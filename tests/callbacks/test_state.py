"""The compression state: the one object the callbacks coordinate through."""

from __future__ import annotations

import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch.nn import functional as F

from compressor.callbacks import Distillation, ExportONNX, Pruning, QuantizationAwareTraining
from compressor.callbacks._clock import Clock
from compressor.callbacks._lightning import check_version
from compressor.callbacks.state import STATE_ATTRIBUTE, CompressionState, Milestone
from compressor.errors import CompositionError, ConfigError

from .test_pruning import PlainModule, digits_loader, resnet, trainer

INPUTS = torch.randn(2, 1, 8, 8)


class AttributeProbe(pl.Callback):
    """Records the LightningModule's instance attributes in the middle of training."""

    def __init__(self) -> None:
        self.during: set[str] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.during |= set(vars(pl_module))


def _attributes(callbacks):
    module = PlainModule(resnet())
    before = set(vars(module))
    probe = AttributeProbe()
    trainer(3, [*callbacks, probe], limit_train_batches=3).fit(
        module, train_dataloaders=digits_loader())
    return before, probe.during, set(vars(module))


def test_only_the_state_attribute_is_added_to_the_users_module(tmp_path):
    _, plain, _ = _attributes([])
    callbacks = [Pruning("channel", sparsity=0.5, criterion="taylor", schedule="linear", start_epoch=0,
                         end_epoch=1, example_inputs=INPUTS),
                 Distillation("self", alpha=0.5),
                 QuantizationAwareTraining(start_epoch=2, example_inputs=INPUTS),
                 ExportONNX(tmp_path / "m.onnx", batch_sizes=(), example_inputs=INPUTS)]
    before, during, after = _attributes(callbacks)
    assert during - plain == {STATE_ATTRIBUTE}
    assert after - before == plain - before  # the state is gone once the fit has ended
    assert STATE_ATTRIBUTE not in after
    assert {"training_step", "on_load_checkpoint", "log", "log_dict"}.isdisjoint(during)


def test_calibration_batches_log_nothing():
    """Scoring calibration batches runs the user's training_step, but what it logs is not kept."""
    logged = []

    class Counting(PlainModule):
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("loss", loss, on_step=True, on_epoch=True)
            logged.append(float(loss.detach()))
            return loss

    module = Counting(resnet())
    pruning = Pruning("channel", sparsity=0.5, criterion="taylor", start_epoch=0, calibration_batches=3,
                      compact=False, example_inputs=INPUTS)
    fit = trainer(1, [pruning], limit_train_batches=2)
    fit.fit(module, train_dataloaders=digits_loader())
    assert len(logged) == 3 + 2  # three calibration batches, then two training steps
    steps = logged[3:]
    assert float(fit.callback_metrics["loss_epoch"]) == pytest.approx(sum(steps) / 2, rel=1e-5)
    assert float(fit.callback_metrics["loss_step"]) == pytest.approx(steps[-1], rel=1e-5)


@pytest.mark.parametrize("order", ["pruning first", "qat first"])
def test_a_compaction_after_the_qat_capture_is_rejected_whatever_the_order(order):
    pruning = Pruning("channel", sparsity=0.5, schedule="linear", start_epoch=0, end_epoch=2)
    qat = QuantizationAwareTraining(start_epoch=2)
    callbacks = [pruning, qat] if order == "pruning first" else [qat, pruning]
    with pytest.raises(CompositionError, match="start_epoch to at least 3"):
        trainer(3, callbacks).fit(PlainModule(resnet()), train_dataloaders=digits_loader())


def _state():
    return CompressionState(PlainModule(resnet()))


@pytest.mark.parametrize(("compaction", "capture", "per_epoch", "ok"), [
    (Milestone("P", Clock("epoch"), 1), Milestone("Q", Clock("epoch"), 2), None, True),
    (Milestone("P", Clock("epoch"), 2), Milestone("Q", Clock("epoch"), 2), None, False),
    (Milestone("P", Clock("step"), 9), Milestone("Q", Clock("step"), 10), None, True),
    (Milestone("P", Clock("step"), 10), Milestone("Q", Clock("step"), 10), None, False),
    # epochs against steps (5 steps per epoch): only checked once the epoch length is known
    (Milestone("P", Clock("epoch"), 1), Milestone("Q", Clock("step"), 10), 5, True),
    (Milestone("P", Clock("epoch"), 1), Milestone("Q", Clock("step"), 9), 5, False),
    (Milestone("P", Clock("step"), 9), Milestone("Q", Clock("epoch"), 2), 5, True),
    # compacting at the first step of the epoch QAT starts with: QAT captured it already
    (Milestone("P", Clock("step"), 10), Milestone("Q", Clock("epoch"), 2), 5, False),
])
def test_compactions_must_come_before_captures(compaction, capture, per_epoch, ok):
    def register_and_check():
        state = _state()
        state.add_compaction("pruning", compaction)
        state.add_capture("qat", capture)  # same units are checked when registered
        state.check_order(per_epoch)

    if ok:
        register_and_check()
        return
    with pytest.raises(CompositionError):
        register_and_check()


def test_load_hooks_and_finalizers_run_by_priority_and_leave_removes_everything():
    module = PlainModule(resnet())
    state = CompressionState(module)
    vars(module)[STATE_ATTRIBUTE] = state
    calls = []
    state.join("a", trainer(1, []))
    state.join("b", trainer(1, []))
    state.add_finalizer("b", 2, lambda m: calls.append("b"))
    state.add_finalizer("a", 1, lambda m: calls.append("a"))
    state.finalize(module)
    assert calls == ["a", "b"]
    state.add_load_hook("a", 1, lambda checkpoint: calls.append("load"))
    assert module._load_state_dict_pre_hooks
    module.load_state_dict(module.state_dict())  # no checkpoint being restored: hooks stay idle
    assert "load" not in calls
    state.leave("a")
    assert STATE_ATTRIBUTE in vars(module) and not state.load_hooks
    state.leave("b")
    assert STATE_ATTRIBUTE not in vars(module) and not module._load_state_dict_pre_hooks


def test_a_schedule_in_both_units_is_refused():
    with pytest.raises(ConfigError, match="not both"):
        QuantizationAwareTraining(start_epoch=1, start_step=3)
    assert QuantizationAwareTraining(start_step=3).clock == Clock("step")
    assert Pruning(sparsity=0.5, start_step=3).clock == Clock("step")
    assert Pruning(sparsity=0.5).clock == Clock("epoch")


def test_an_unverified_lightning_version_warns_once():
    assert check_version(pl.__version__)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not check_version("9.0.0")
        assert not check_version("9.1.0")
    assert len([w for w in caught if "verified" in str(w.message)]) == 1
