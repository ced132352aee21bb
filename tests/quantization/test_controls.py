"""The switches a QAT loop needs: batch-norm freezing, observers, fake quantization, modes."""

import copy

import pytest
import torch

from compressor.errors import ConfigError
from compressor.quantization import (
    eval_mode,
    freeze_batch_norm,
    prepare_qat,
    quantization_info,
    set_fake_quant,
    set_observers,
    set_qat_training,
)

from .conftest import SHAPE, batches, tiny, train_steps


def _running_means(model):
    return {k: v.clone() for k, v in model.named_buffers() if k.endswith("running_mean")}


def test_freeze_batch_norm_stops_statistics_and_survives_mode_switches():
    prepared = prepare_qat(tiny("resnet20"), batches(1)[0])
    before = _running_means(prepared)
    prepared(batches(1, seed=2)[0])
    assert all(not torch.equal(v, _running_means(prepared)[k]) for k, v in before.items())
    freeze_batch_norm(prepared)
    assert quantization_info(prepared).batch_norm_frozen
    prepared.eval()
    prepared.train()  # the graph's batch norm goes back to train mode, but stays frozen
    frozen = _running_means(prepared)
    train_steps(prepared, 2)
    assert all(torch.equal(v, _running_means(prepared)[k]) for k, v in frozen.items())
    freeze_batch_norm(prepared, False)
    prepared(batches(1, seed=4)[0])
    assert all(not torch.equal(v, _running_means(prepared)[k]) for k, v in frozen.items())


def test_fake_quant_off_computes_like_the_float_model():
    model = tiny("resnet20").eval()
    prepared = prepare_qat(model, batches(1)[0])
    set_qat_training(prepared, False)
    x = batches(1, seed=5)[0]
    with torch.no_grad():
        prepared(x)  # observers see the data once
        set_observers(prepared, False)
        quantized = prepared(x)
        assert set_fake_quant(prepared, False) > 0
        float_out = prepared(x)
        reference = model(x)
    assert torch.allclose(float_out, reference, atol=1e-4)
    assert not torch.allclose(quantized, reference, atol=1e-4)


def test_observers_off_freeze_the_ranges():
    prepared = prepare_qat(tiny("resnet20"), batches(1)[0])
    train_steps(prepared, 1)
    assert set_observers(prepared, False) > 0
    scales = {k: v.clone() for k, v in prepared.state_dict().items() if k.endswith(".scale")}
    with torch.no_grad():
        prepared(batches(1, seed=9)[0] * 10)
    after = prepared.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in scales.items())
    set_observers(prepared, True)
    with torch.no_grad():
        prepared(batches(1, seed=9)[0] * 10)
    assert any(not torch.equal(value, prepared.state_dict()[key]) for key, value in scales.items())


def test_deep_copy_of_prepared_model_switches_modes_on_its_own_graph():
    prepared = prepare_qat(tiny("resnet20"), batches(1)[0])
    clone = copy.deepcopy(prepared)
    clone.eval()
    assert not clone.training and prepared.training
    x = torch.randn(3, *SHAPE)
    means, originals = _running_means(clone), _running_means(prepared)
    with torch.no_grad():
        clone(x)
        prepared(x)
    assert all(torch.equal(v, _running_means(clone)[k]) for k, v in means.items())
    assert all(not torch.equal(v, _running_means(prepared)[k]) for k, v in originals.items())
    clone.train()
    assert train_steps(clone, 1)


def test_controls_reject_unprepared_models():
    model = tiny("resnet20")
    for control in (freeze_batch_norm, lambda m: set_observers(m, False),
                    lambda m: set_fake_quant(m, False), lambda m: set_qat_training(m, True)):
        with pytest.raises(ConfigError, match="not prepared for quantization"):
            control(model)


def test_eval_mode_restores_a_frozen_prepared_model():
    prepared = prepare_qat(tiny("resnet20"), batches(1)[0])
    freeze_batch_norm(prepared)
    with eval_mode(prepared):
        assert not prepared.training
    assert prepared.training
    frozen = _running_means(prepared)
    train_steps(prepared, 1)
    assert all(torch.equal(v, _running_means(prepared)[k]) for k, v in frozen.items())


def test_state_dict_of_a_prepared_model_restores_into_a_fresh_preparation():
    """What resuming QAT from a checkpoint needs: prepare again, then load the saved state."""
    prepared = prepare_qat(tiny("resnet20"), batches(1)[0])
    train_steps(prepared, 2)
    state = {key: value.clone() for key, value in prepared.state_dict().items()}
    resumed = prepare_qat(tiny("resnet20"), batches(1)[0])
    resumed.load_state_dict(state)
    x = batches(1, seed=11)[0]
    for model in (prepared, resumed):
        model.eval()
        set_observers(model, False)
    with torch.no_grad():
        assert torch.equal(prepared(x), resumed(x))
