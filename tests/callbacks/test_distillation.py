import copy
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from compressor.callbacks import Distillation
from compressor.callbacks._student import set_student
from compressor.distillation import find_group
from compressor.errors import (
    CompositionError,
    ConfigError,
    InvalidTypeError,
    UnknownNameError,
)
from compressor.training import ClassificationModule
from tests.distillation.nets import TinyConvNet, make_batches, reference_loss

LR = 0.5


class PlainModule(pl.LightningModule):
    """A user's module: not ClassificationModule, its step returns a tensor or a dict."""

    def __init__(self, net: nn.Module, returns: str = "tensor") -> None:
        super().__init__()
        self.net = net
        self.returns = returns

    def training_step(self, batch, batch_idx):
        inputs, labels = batch
        loss = F.cross_entropy(self.net(inputs), labels)
        return loss if self.returns == "tensor" else {"loss": loss, "note": "kept"}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


class TwoModels(PlainModule):
    """Holds two models with parameters: the student must be named with ``student=``."""

    def __init__(self) -> None:
        super().__init__(TinyConvNet())
        self.other = nn.Linear(2, 2)


def loader(batches):
    inputs = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    return DataLoader(TensorDataset(inputs, labels), batch_size=len(batches[0][1]), shuffle=False)


def fit(module, callbacks, batches, ckpt_path=None, **kwargs):
    kwargs.setdefault("max_steps", len(batches))
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, callbacks=callbacks, **kwargs)
    trainer.fit(module, loader(batches), ckpt_path=ckpt_path)
    return trainer


class Spy(pl.Callback):
    """Records, at the end of each training batch, what the tests check."""

    def __init__(self, distillation: Distillation) -> None:
        self.distillation = distillation
        self.terms, self.checks = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        distiller = self.distillation.distiller
        teacher = distiller.teacher
        in_optimizer = {id(p) for group in trainer.optimizers[0].param_groups
                        for p in group["params"]}
        self.terms.append(dict(distiller.last_terms))
        self.checks.append({
            "module_training": pl_module.training,
            "teacher_training": any(m.training for m in teacher.modules()),
            "teacher_grad": any(p.requires_grad for p in teacher.parameters()),
            "teacher_in_optimizer": any(id(p) in in_optimizer for p in teacher.parameters()),
            "adapters_in_optimizer": all(id(p) in in_optimizer for p in distiller.parameters()),
            "adapter_grads": [p.grad is not None and bool(p.grad.abs().sum() > 0)
                              for p in distiller.parameters()],
            "outputs": outputs,
        })


def manual_sgd_step(student, teacher, batches, temperature, alpha, accumulate=1):
    """One SGD step on the hand-written combined loss, gradients accumulated over batches."""
    student = copy.deepcopy(student)
    for inputs, labels in batches:
        with torch.no_grad():
            teacher_logits = teacher(inputs)
        loss = reference_loss(student(inputs), teacher_logits, labels, temperature, alpha)
        (loss / accumulate).backward()
    with torch.no_grad():
        for parameter in student.parameters():
            parameter -= LR * parameter.grad
    return student


def assert_same_weights(first, second):
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


# ------------------------------------------------------------------ correctness of the loss

@pytest.mark.parametrize("returns", ["tensor", "dict"])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_update_equals_hand_written_combined_loss(returns, accumulate):
    student, teacher = TinyConvNet(4), TinyConvNet(8)
    batches = make_batches(accumulate)
    expected = manual_sgd_step(student, teacher, batches, 2.0, 0.7, accumulate)
    module = PlainModule(copy.deepcopy(student), returns)
    callback = Distillation(teacher, temperature=2.0, alpha=0.7)
    spy = Spy(callback)
    trainer = fit(module, [callback, spy], batches, max_steps=1,
                  accumulate_grad_batches=accumulate)
    assert_same_weights(module.net, expected)
    assert len(spy.terms) == accumulate and all("kd_loss" in t for t in spy.terms)
    assert {"distill/kd_loss", "distill/task_loss"} <= set(trainer.callback_metrics)
    if returns == "dict":
        assert spy.checks[0]["outputs"]["note"] == "kept"


def test_bf16_teacher_update_is_close_to_the_hand_written_fp32_loss():
    student, teacher = TinyConvNet(4), TinyConvNet(8)
    batches = make_batches(1)
    expected = manual_sgd_step(student, teacher, batches, 2.0, 0.7, 1)
    module = PlainModule(copy.deepcopy(student))
    dtypes = []
    teacher.head.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    callback = Distillation(teacher, temperature=2.0, alpha=0.7, teacher_precision="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no native bfloat16 on some CPUs: slower, still right
        fit(module, [callback], batches, max_steps=1)
    assert dtypes == [torch.bfloat16] * 2  # the step's forward + the one-time layout trial
    for mine, theirs in zip(module.net.parameters(), expected.parameters(), strict=True):
        assert torch.allclose(mine, theirs, rtol=1e-2, atol=1e-3)


def test_teacher_is_frozen_separate_and_the_only_extra_forward():
    student, teacher = TinyConvNet(4), TinyConvNet(8)
    module = PlainModule(student)
    keys_before = set(module.state_dict())
    calls = {"student": 0, "teacher": 0}
    student.register_forward_hook(lambda *_: calls.__setitem__("student", calls["student"] + 1))
    teacher.register_forward_hook(lambda *_: calls.__setitem__("teacher", calls["teacher"] + 1))
    callback = Distillation(teacher)
    spy = Spy(callback)
    fit(module, [callback, spy], make_batches(3))
    # one student forward per step, no more; one teacher forward per step plus, at the first
    # step only, the trial that decides whether channels-last runs and gives the same outputs
    assert calls == {"student": 3, "teacher": 4}
    for check in spy.checks:
        assert check["module_training"] and not check["teacher_training"]
        assert not check["teacher_grad"] and not check["teacher_in_optimizer"]
    assert set(module.state_dict()) == keys_before


def test_training_step_signature_is_kept():
    class NoBatchIndex(PlainModule):
        def training_step(self, batch):  # Lightning must not pass batch_idx to the wrapper
            return super().training_step(batch, 0)

    callback = Distillation(TinyConvNet())
    spy = Spy(callback)
    fit(NoBatchIndex(TinyConvNet()), [callback, spy], make_batches(2))
    assert len(spy.terms) == 2


def test_teardown_restores_training_step_and_leaves_no_hooks():
    module = PlainModule(TinyConvNet())
    fit(module, [Distillation(TinyConvNet(), features={"features": "features"})], make_batches(1))
    assert "training_step" not in vars(module)
    assert module.training_step.__func__ is PlainModule.training_step
    for submodule in module.modules():
        assert not submodule._forward_hooks and not submodule._forward_pre_hooks


def test_self_teacher_is_a_snapshot_unaffected_by_student_updates():
    student = TinyConvNet()
    initial = copy.deepcopy(student)
    callback = Distillation("self", alpha=0.5)
    fit(PlainModule(student), [callback], make_batches(3))
    teacher = callback.distiller.teacher
    assert teacher is not student
    assert_same_weights(teacher, initial)
    pairs = zip(student.parameters(), initial.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)


def mlp(width):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


def test_works_with_the_reference_module_and_its_lr_schedule(digits):
    module = ClassificationModule(mlp(32), 10, (1, 8, 8), optimizer={"lr": 0.05})
    callback = Distillation(mlp(48), features={"2": "2"}, feature_weight=0.1)  # linear adapter
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[callback])
    trainer.fit(module, datamodule=digits)
    logged = set(trainer.callback_metrics)
    assert {"distill/kd_loss", "distill/feature_loss", "train/loss"} <= logged
    group = find_group(trainer.optimizers[0])  # scheduled like the model's own parameters
    assert group["lr"] == pytest.approx(trainer.optimizers[0].param_groups[0]["lr"])


# ------------------------------------------------------------------ feature hints and attention

def test_feature_hint_adapters_are_trained_in_the_optimizer_but_not_in_the_student():
    student, teacher = TinyConvNet(4), TinyConvNet(8)
    module = PlainModule(student)
    student_keys = set(student.state_dict())
    callback = Distillation(teacher, features={"features": "features", "head": "head"},
                            feature_weight=2.0)
    spy = Spy(callback)
    trainer = fit(module, [callback, spy], make_batches(3))
    adapters = callback.distiller.adapters
    assert [type(a).__name__ for a in adapters.values()] == ["Conv2d"]  # heads match: none
    assert adapters["0"].weight.shape == (8, 4, 1, 1)
    assert all(check["adapters_in_optimizer"] for check in spy.checks)
    assert all(all(check["adapter_grads"]) for check in spy.checks)
    assert find_group(trainer.optimizers[0])["params"] == list(callback.distiller.parameters())
    assert set(student.state_dict()) == student_keys
    assert "distill/feature_loss" in trainer.callback_metrics


def test_feature_hint_gradient_equals_hand_written_loss():
    student, teacher = TinyConvNet(4), TinyConvNet(4)  # same shapes: no adapter
    batches = make_batches(1)
    reference = copy.deepcopy(student)
    inputs, labels = batches[0]
    with torch.no_grad():
        teacher_logits, teacher_features = teacher(inputs), teacher.features(inputs)
    loss = (reference_loss(reference(inputs), teacher_logits, labels, 4.0, 0.5)
            + 3.0 * F.mse_loss(reference.features(inputs), teacher_features))
    loss.backward()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter -= LR * parameter.grad
    module = PlainModule(copy.deepcopy(student))
    fit(module, [Distillation(teacher, features={"features": "features"}, feature_weight=3.0)],
        batches)
    assert_same_weights(module.net, reference)


def test_attention_transfer_between_different_widths():
    callback = Distillation(TinyConvNet(16), attention=["features.1"], attention_weight=5.0)
    spy = Spy(callback)
    trainer = fit(PlainModule(TinyConvNet(4)), [callback, spy], make_batches(2))
    assert all(t["attention_loss"] > 0 for t in spy.terms)
    assert "distill/attention_loss" in trainer.callback_metrics


def test_optimizer_rebuilt_mid_training_gets_the_adapters_back():
    class RebuildOptimizer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 1:  # as a pruning callback does after compaction
                trainer.strategy.setup_optimizers(trainer)

    callback = Distillation(TinyConvNet(8), features={"features": "features"})
    spy = Spy(callback)
    fit(PlainModule(TinyConvNet(4)), [RebuildOptimizer(), callback, spy], make_batches(3))
    assert all(check["adapters_in_optimizer"] for check in spy.checks)


# ------------------------------------------------------------------ composition with swaps

class SwapStudent(pl.Callback):
    """Replaces the student at its attribute path before batch ``at`` (like compaction/QAT)."""

    def __init__(self, make, at: int = 1) -> None:
        self.make, self.at = make, at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.at:
            set_student(pl_module, "net", self.make(pl_module.net))


def trace_fx(model):
    return torch.fx.symbolic_trace(copy.deepcopy(model))


def export_graph(model):
    inputs = torch.randn(4, 1, 8, 8)
    batch = {"x": {0: torch.export.Dim("batch", min=1)}}
    return torch.export.export(copy.deepcopy(model), (inputs,), dynamic_shapes=batch).module()


@pytest.mark.parametrize("make", [copy.deepcopy, trace_fx], ids=["deepcopy", "fx"])
def test_student_swapped_mid_training_keeps_logits_and_features(make):
    callback = Distillation(TinyConvNet(8), features={"features.0": "features.0"})
    spy = Spy(callback)
    swap = SwapStudent(make)
    module = PlainModule(TinyConvNet(4))
    original = module.net
    fit(module, [swap, callback, spy], make_batches(3))
    assert module.net is not original
    assert len(spy.terms) == 3
    assert all({"kd_loss", "feature_loss"} <= set(t) and t["kd_loss"] > 0 for t in spy.terms)
    for check in spy.checks:  # the KD term really is in the returned loss
        assert not torch.allclose(check["outputs"]["loss"], torch.tensor(0.0))


def test_export_graph_swap_keeps_logit_distillation():
    callback = Distillation(TinyConvNet(8), alpha=1.0)
    spy = Spy(callback)
    module = PlainModule(TinyConvNet(4))
    fit(module, [callback, spy, SwapStudent(export_graph)], make_batches(3))
    assert isinstance(module.net, torch.fx.GraphModule)
    assert len(spy.terms) == 3 and all(t["kd_loss"] > 0 for t in spy.terms)
    for terms, check in zip(spy.terms, spy.checks, strict=True):  # alpha=1: loss is KD only
        assert torch.allclose(check["outputs"]["loss"], terms["kd_loss"])


def test_export_graph_swap_with_features_explains_the_problem():
    callback = Distillation(TinyConvNet(8), features={"features.0": "features.0"})
    with pytest.raises((ConfigError, UnknownNameError), match="GraphModule"):
        fit(PlainModule(TinyConvNet(4)), [callback, SwapStudent(export_graph)], make_batches(3))


# ------------------------------------------------------------------ checkpoints and resume

def save_checkpoint_after(module, callbacks, batches, path):
    trainer = fit(module, callbacks, batches)
    trainer.save_checkpoint(path)
    return trainer


def test_resume_restores_the_original_self_teacher(tmp_path):
    batches = make_batches(2)
    student = TinyConvNet(4)
    initial = copy.deepcopy(student)
    first = Distillation("self", attention=["features.1"])
    save_checkpoint_after(PlainModule(student), [first], batches, tmp_path / "a.ckpt")

    torch.manual_seed(123)
    fresh = TinyConvNet(4)  # different initial weights: must not become the teacher
    second = Distillation("self", attention=["features.1"])
    spy = Spy(second)
    fit(PlainModule(fresh), [spy, second], batches, max_steps=4,
        ckpt_path=str(tmp_path / "a.ckpt"))
    assert len(spy.terms) == 2  # resumed after step 2
    assert_same_weights(second.distiller.teacher, initial)


def test_resume_restores_adapter_weights_and_optimizer_group(tmp_path):
    batches = make_batches(2)
    first = Distillation(TinyConvNet(8), features={"features": "features"})
    trainer = save_checkpoint_after(PlainModule(TinyConvNet(4)), [first], batches,
                                    tmp_path / "a.ckpt")
    saved = {k: v.clone() for k, v in first.distiller.adapters.state_dict().items()}
    saved_group = find_group(trainer.optimizers[0])

    class Check(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            adapters = second.distiller.adapters.state_dict()
            self.equal = all(torch.equal(adapters[k], v) for k, v in saved.items())
            group = find_group(trainer.optimizers[0])
            self.group_restored = group is not None and group["lr"] == saved_group["lr"]

    second = Distillation(TinyConvNet(8), features={"features": "features"})
    check = Check()
    fit(PlainModule(TinyConvNet(4)), [second, check], batches, max_steps=3,
        ckpt_path=str(tmp_path / "a.ckpt"))
    assert check.equal and check.group_restored


def test_resume_from_a_checkpoint_without_distillation_uses_its_weights_as_teacher(tmp_path):
    batches = make_batches(2)
    module = PlainModule(TinyConvNet(4))
    save_checkpoint_after(module, [], batches, tmp_path / "plain.ckpt")
    trained = copy.deepcopy(module.net)
    callback = Distillation("self")
    fit(PlainModule(TinyConvNet(4)), [callback], batches, max_steps=3,
        ckpt_path=str(tmp_path / "plain.ckpt"))
    assert_same_weights(callback.distiller.teacher, trained)


def test_callback_state_round_trips():
    callback = Distillation("self", features={"features": "features"})
    fit(PlainModule(TinyConvNet(4)), [callback], make_batches(1))
    state = callback.state_dict()
    assert set(state) == {"adapters", "teacher"}
    other = Distillation("self", features={"features": "features"})
    other.load_state_dict(state)  # before setup: kept and applied in setup()
    kept = other.state_dict()
    assert kept.keys() == state.keys()
    assert all(torch.equal(kept["teacher"][k], v) for k, v in state["teacher"].items())
    assert callback.state_key == other.state_key != Distillation(TinyConvNet()).state_key


# ------------------------------------------------------------------ teacher from a checkpoint

def test_teacher_from_lightning_checkpoint_and_plain_state_dict(tmp_path):
    source = TinyConvNet(4)
    lightning = ClassificationModule(source, 3, (1, 8, 8))  # keys under "model."
    torch.save({"state_dict": lightning.state_dict()}, tmp_path / "teacher.ckpt")
    torch.save(source.state_dict(), tmp_path / "teacher.pt")
    for name in ("teacher.ckpt", "teacher.pt"):
        callback = Distillation(tmp_path / name, student="net")
        fit(PlainModule(TinyConvNet(4)), [callback], make_batches(1))
        assert_same_weights(callback.distiller.teacher, source)


def test_teacher_checkpoint_of_another_architecture_is_rejected(tmp_path):
    torch.save(TinyConvNet(8).state_dict(), tmp_path / "wide.pt")
    callback = Distillation(tmp_path / "wide.pt")
    with pytest.raises(ConfigError, match="student's architecture"):
        fit(PlainModule(TinyConvNet(4)), [callback], make_batches(1))


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs, error, match", [
    ({"temperature": 0.0}, ConfigError, "temperature"),
    ({"temperature": -2}, ConfigError, "temperature"),
    ({"alpha": 1.01}, ConfigError, r"alpha.*\[0, 1\]"),
    ({"alpha": -0.5}, ConfigError, "alpha"),
    ({"feature_loss": "l2"}, UnknownNameError, "mse"),
    ({"student": 3}, InvalidTypeError, "student"),
    ({"teacher_precision": "half"}, UnknownNameError, "bf16"),
])
def test_constructor_rejects_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        Distillation("self", **kwargs)


@pytest.mark.parametrize("teacher, error, match", [
    ("slef", ConfigError, "Did you mean 'self'"),
    ("missing.ckpt", ConfigError, "neither \"self\" nor an existing checkpoint"),
    (42, InvalidTypeError, "nn.Module"),
])
def test_constructor_rejects_bad_teachers(teacher, error, match):
    with pytest.raises(error, match=match):
        Distillation(teacher)


def test_unknown_teacher_layer_is_rejected_in_the_constructor():
    with pytest.raises(UnknownNameError, match=r"teacher layer 'featurs'.*Did you mean 'features'"):
        Distillation(TinyConvNet(), features={"features": "featurs"})


def test_unknown_student_layer_is_rejected_before_training():
    callback = Distillation("self", features={"haed": "head"})
    with pytest.raises(UnknownNameError, match=r"student layer 'haed'.*'head'"):
        fit(PlainModule(TinyConvNet()), [callback], make_batches(1))


def test_incompatible_outputs_fail_at_the_first_batch_with_both_shapes():
    module = PlainModule(TinyConvNet(classes=3))
    initial = copy.deepcopy(module.net)
    with pytest.raises(ConfigError, match=r"student \(8, 3\) vs teacher \(8, 5\)"):
        fit(module, [Distillation(TinyConvNet(classes=5))], make_batches(1))
    assert_same_weights(module.net, initial)  # nothing was trained
    assert "training_step" not in vars(module)  # restored although fit failed


def test_ambiguous_student_needs_a_path_and_self_needs_a_submodule():
    with pytest.raises(ConfigError, match="student="):
        fit(TwoModels(), [Distillation(TinyConvNet())], make_batches(1))
    with pytest.raises(ConfigError, match="whole LightningModule"):
        fit(PlainModule(TinyConvNet()), [Distillation("self", student="")], make_batches(1))


def test_manual_optimization_is_rejected():
    class Manual(PlainModule):
        def __init__(self):
            super().__init__(TinyConvNet())
            self.automatic_optimization = False

    with pytest.raises(CompositionError, match="manual optimization"):
        fit(Manual(), [Distillation(TinyConvNet())], make_batches(1))


def test_teacher_that_is_the_student_is_rejected():
    student = TinyConvNet()
    with pytest.raises(ConfigError, match="shares parameters"):
        fit(PlainModule(student), [Distillation(student)], make_batches(1))


# ------------------------------------------------------------------ distributed (DDP)

class SaveAdapters(pl.Callback):
    """Each DDP process saves its adapters and student after training."""

    def __init__(self, distillation: Distillation, folder) -> None:
        self.distillation, self.folder = distillation, folder

    def on_train_end(self, trainer, pl_module):
        torch.save({"adapters": self.distillation.distiller.adapters.state_dict(),
                    "student": pl_module.net.state_dict()},
                   self.folder / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_ddp_update_equals_the_averaged_hand_written_loss(tmp_path):
    from compressor.distillation import AdapterSpec, build_adapter

    student, teacher = TinyConvNet(4), TinyConvNet(8)
    batches = make_batches(2, size=4)  # one batch of 4 per process
    inputs = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    # DistributedSampler without shuffling: process r gets samples r, r + 2, r + 4, ...
    shards = [(inputs[rank::2], labels[rank::2]) for rank in range(2)]
    reference = copy.deepcopy(student)
    adapter = build_adapter(AdapterSpec("conv2d", 4, 8), torch.Generator().manual_seed(0))
    for shard_inputs, shard_labels in shards:
        with torch.no_grad():
            teacher_logits, teacher_features = teacher(shard_inputs), teacher.features(shard_inputs)
        loss = (reference_loss(reference(shard_inputs), teacher_logits, shard_labels, 4.0, 0.5)
                + F.mse_loss(adapter(reference.features(shard_inputs)), teacher_features))
        (loss / 2).backward()  # DDP averages the gradients of the processes
    with torch.no_grad():
        for parameter in [*reference.parameters(), *adapter.parameters()]:
            parameter -= LR * parameter.grad

    callback = Distillation(teacher, features={"features": "features"})
    module = PlainModule(copy.deepcopy(student))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         callbacks=[callback, SaveAdapters(callback, tmp_path)])
    trainer.fit(module, DataLoader(TensorDataset(inputs, labels), batch_size=4, shuffle=False))
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for saved in ranks:
        for name, value in reference.state_dict().items():
            assert torch.allclose(saved["student"][name], value, atol=1e-6), name
        for name, value in adapter.state_dict().items():
            assert torch.allclose(saved["adapters"][f"0.{name}"], value, atol=1e-6), name
