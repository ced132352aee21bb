import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from compressor.distillation import DistillationConfig, Distiller
from compressor.errors import ConfigError, InvalidTypeError, NonFiniteError, UnknownNameError
from tests.distillation.nets import TinyConvNet, make_batches, reference_loss


def test_plain_training_loop_matches_hand_written_loss():
    student, teacher = TinyConvNet(4), TinyConvNet(8)
    reference = copy.deepcopy(student)
    distiller = Distiller(teacher, student, DistillationConfig(temperature=3.0, alpha=0.7))
    (inputs, labels), = make_batches(1)
    with distiller.capture():
        logits = student(inputs)
    loss = distiller(F.cross_entropy(logits, labels))
    loss.backward()
    expected = reference_loss(reference(inputs), teacher(inputs).detach(), labels, 3.0, 0.7)
    expected.backward()
    assert torch.allclose(loss, expected, atol=1e-6)
    for mine, theirs in zip(student.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-6)
    assert all(p.grad is None for p in teacher.parameters())
    assert set(distiller.last_terms) == {"task_loss", "kd_loss"}


def test_explicit_outputs_and_inputs_without_capture():
    student, teacher = TinyConvNet(4), TinyConvNet(4)
    distiller = Distiller(teacher, student, DistillationConfig(alpha=1.0))
    (inputs, labels), = make_batches(1)
    logits = student(inputs)
    loss = distiller(F.cross_entropy(logits, labels), logits, inputs)
    expected = reference_loss(logits, teacher(inputs), labels, 4.0, 1.0)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_teacher_is_frozen_in_eval_mode_and_restored_on_close():
    student, teacher = TinyConvNet(), TinyConvNet()
    teacher.train()
    distiller = Distiller(teacher, student)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    teacher.train()  # e.g. a framework switching every module to training mode
    (inputs, labels), = make_batches(1)
    with distiller.capture():
        logits = student(inputs)
    distiller(F.cross_entropy(logits, labels))
    assert not teacher.training
    distiller.close()
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())


def test_feature_hints_need_built_adapters_that_then_train():
    student, teacher = TinyConvNet(4), TinyConvNet(8)
    config = DistillationConfig(features={"features": "features"}, feature_loss="cosine")
    distiller = Distiller(teacher, student, config)
    (inputs, labels), = make_batches(1)
    with distiller.capture():
        logits = student(inputs)
    with pytest.raises(ConfigError, match=r"needs an adapter \(student \(8, 4, 8, 8\) vs "
                                          r"teacher \(8, 8, 8, 8\)\).*build_adapters"):
        distiller(F.cross_entropy(logits, labels))
    student.train()
    parameters = distiller.build_adapters(inputs)
    assert student.training  # build_adapters ran the student in eval mode and restored it
    assert [tuple(p.shape) for p in parameters] == [(8, 4, 1, 1), (8,)]
    assert not any(p is q for p in parameters for q in student.parameters())
    with distiller.capture():
        logits = student(inputs)
    loss = distiller(F.cross_entropy(logits, labels))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.parameters())
    assert "feature_loss" in distiller.last_terms


def test_attention_transfer_and_custom_terms_are_added():
    student, teacher = TinyConvNet(4), TinyConvNet(6)
    seen = {}

    def l2_logits(student_output, teacher_output, inputs):
        seen["inputs"] = inputs
        return 0.1 * (student_output - teacher_output).pow(2).mean()

    config = DistillationConfig(alpha=0.0, attention={"features.1": "features.1"},
                                attention_weight=2.0, losses={"l2": l2_logits})
    distiller = Distiller(teacher, student, config)
    (inputs, labels), = make_batches(1)
    with distiller.capture():
        logits = student(inputs)
    task = F.cross_entropy(logits, labels)
    loss = distiller(task)
    terms = distiller.last_terms
    assert torch.allclose(loss, task + 2.0 * terms["attention_loss"] + terms["l2"], atol=1e-6)
    assert terms["attention_loss"] > 0 and terms["l2"] > 0
    assert seen["inputs"][0] is inputs


def test_custom_term_must_return_a_scalar():
    student, teacher = TinyConvNet(), TinyConvNet()
    distiller = Distiller(teacher, student, DistillationConfig(losses={"bad": lambda s, t, x: s}))
    (inputs, labels), = make_batches(1)
    with distiller.capture():
        logits = student(inputs)
    with pytest.raises(InvalidTypeError, match=r"'bad' must return a scalar tensor, got \(8, 3\)"):
        distiller(F.cross_entropy(logits, labels))


def test_student_must_run_exactly_once_per_capture():
    student, teacher = TinyConvNet(), TinyConvNet()
    distiller = Distiller(teacher, student)
    (inputs, labels), = make_batches(1)
    with distiller.capture():
        student(inputs)
        logits = student(inputs)
    with pytest.raises(ConfigError, match="called 2 times"):
        distiller(F.cross_entropy(logits, labels))
    with distiller.capture():
        pass
    with pytest.raises(ConfigError, match="called 0 times"):
        distiller(F.cross_entropy(logits, labels))


def test_unknown_layer_names_list_the_closest_ones():
    with pytest.raises(UnknownNameError, match=r"Unknown student layer 'feature'.*'features'"):
        Distiller(TinyConvNet(), TinyConvNet(), DistillationConfig(features={"feature": "head"}))
    with pytest.raises(UnknownNameError, match=r"Unknown teacher layer 'haed'.*'head'"):
        Distiller(TinyConvNet(), TinyConvNet(), DistillationConfig(features={"head": "haed"}))


def test_student_resolved_at_capture_time_follows_a_swap():
    holder = nn.Module()
    holder.model = TinyConvNet(4)
    teacher = TinyConvNet(4)
    config = DistillationConfig(features={"features.0": "features.0"})
    distiller = Distiller(teacher, lambda: holder.model, config)
    (inputs, labels), = make_batches(1)
    holder.model = torch.fx.symbolic_trace(copy.deepcopy(holder.model))  # names preserved
    with distiller.capture():
        logits = holder.model(inputs)
    distiller(F.cross_entropy(logits, labels))
    assert "feature_loss" in distiller.last_terms
    assert not holder.model._forward_hooks and not holder.model._forward_pre_hooks


def test_teacher_sharing_parameters_with_the_student_is_rejected():
    student = TinyConvNet()
    with pytest.raises(ConfigError, match="teacher=\"self\""):
        Distiller(student, student)


def test_adapter_state_round_trip():
    student, teacher = TinyConvNet(4), TinyConvNet(8)
    config = DistillationConfig(features={"features": "features"})
    distiller = Distiller(teacher, student, config)
    (inputs, _), = make_batches(1)
    distiller.build_adapters(inputs)
    restored = Distiller(TinyConvNet(8), TinyConvNet(4), config)
    restored.load_state_dict(distiller.state_dict())
    for mine, theirs in zip(restored.parameters(), distiller.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    other = Distiller(TinyConvNet(8), TinyConvNet(4), DistillationConfig())
    with pytest.raises(ConfigError, match="same `features=`"):
        other.load_state_dict(distiller.state_dict())


def _bf16_run(precision: str, native: bool, monkeypatch: pytest.MonkeyPatch):
    """Loss, teacher conv output dtype and student feature gradient of one step."""
    monkeypatch.setattr("compressor.distillation.distiller.has_native_bf16", lambda device: native)
    monkeypatch.setattr("compressor.distillation.teacher.has_native_bf16", lambda device: native)
    torch.manual_seed(0)
    student, teacher = TinyConvNet(4), TinyConvNet(8)
    dtypes = []
    teacher.features[0].register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    config = DistillationConfig(temperature=2.0, alpha=0.5, features={"features": "features"},
                                teacher_precision=precision)
    distiller = Distiller(teacher, student, config)
    (inputs, labels), = make_batches(1)
    distiller.build_adapters(inputs)
    with distiller.capture():
        logits = student(inputs)
    loss = distiller(F.cross_entropy(logits, labels))
    loss.backward()
    return loss, dtypes[-1], student.features[0].weight.grad


def test_bf16_teacher_runs_in_bfloat16_and_gives_close_float32_losses(monkeypatch):
    exact, exact_dtype, exact_grad = _bf16_run("fp32", True, monkeypatch)
    loss, dtype, grad = _bf16_run("bf16", True, monkeypatch)
    assert exact_dtype == torch.float32 and dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32
    assert not torch.equal(loss, exact)  # really computed differently...
    assert torch.allclose(loss, exact, rtol=2e-2)  # ...but close
    assert torch.allclose(grad, exact_grad, rtol=5e-2, atol=1e-3)


def test_auto_teacher_precision_uses_bf16_only_with_native_support(monkeypatch):
    exact, _, _ = _bf16_run("fp32", False, monkeypatch)
    loss, dtype, _ = _bf16_run("auto", False, monkeypatch)
    assert dtype == torch.float32 and torch.equal(loss, exact)
    _, dtype, _ = _bf16_run("auto", True, monkeypatch)
    assert dtype == torch.bfloat16


def test_bf16_teacher_without_native_support_warns(monkeypatch):
    with pytest.warns(UserWarning, match="no native bfloat16"):
        _, dtype, _ = _bf16_run("bf16", False, monkeypatch)
    assert dtype == torch.bfloat16


def test_unknown_teacher_precision_is_rejected():
    with pytest.raises(UnknownNameError, match="teacher_precision.*bf16"):
        DistillationConfig(teacher_precision="fp16")


def test_non_finite_teacher_output_names_the_teachers_first_non_finite_module():
    teacher = TinyConvNet()
    with torch.no_grad():
        teacher.head.weight[0, 0] = float("nan")
    student = TinyConvNet()
    distiller = Distiller(teacher, student)
    inputs, labels = make_batches(1)[0]
    with distiller.capture():
        logits = student(inputs)
    with pytest.raises(NonFiniteError, match=r"^The teacher output became non-finite \(NaN or "
                                             r"Inf\)\. First module of the teacher with a "
                                             r"non-finite output: 'head' \(Linear\); its own "
                                             r"'weight' already non-finite\."):
        distiller(F.cross_entropy(logits, labels))
    assert not teacher.training  # the search ran in the teacher's (eval) mode
