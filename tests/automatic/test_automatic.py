"""Automatic allocation: exact costs, sensitivity, the allocator, budgets met, the callback."""

from __future__ import annotations

import re

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from compressor.automatic import (
    AllocationProblem,
    BudgetError,
    allocate,
    analyze_sensitivity,
    build_cost_model,
    candidate_widths,
    compact_copy,
    evaluation_batches,
    plan_compression,
)
from compressor.automatic.plan import removable_blocks
from compressor.callbacks import Pruning
from compressor.graph.macs import count_macs
from compressor.models import create_model
from compressor.pruning import Budget, Pruner, PruningConfig
from compressor.utils.modules import count_parameters

from ..callbacks.test_pruning import PlainModule, digits_loader, trainer

INPUTS = torch.randn(2, 1, 8, 8)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSOR_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trained():
    """A small ResNet trained briefly on the digits (sensitivities then mean something)."""
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_channels=1)
    fit = trainer(2, [])
    fit.fit(PlainModule(model), train_dataloaders=digits_loader(shuffle=True))
    return model.eval()


def channel_pruner(model, **settings):
    config = PruningConfig(granularity="channel", allocation="auto",
                           budget=settings.pop("budget", {"macs": 0.5}), **settings)
    return Pruner(model, config, INPUTS)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_predicted_macs_and_params_equal_the_compacted_model(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1)
    inputs = torch.randn(2, 1, 28, 28)
    pruner = Pruner(model, PruningConfig(granularity="channel", sparsity=0.5), inputs)
    costs = build_cost_model(model, pruner.unit_set.groups, inputs[:1])
    generator = torch.Generator().manual_seed(1)
    kept = {u: int(torch.randint(1, n + 1, (1,), generator=generator)) for u, n in costs.sizes.items()}
    compacted = compact_copy(model, kept, inputs)
    assert costs.params(costs.dense()) == count_parameters(model)
    assert costs.macs(kept) == count_macs(compacted, inputs[:1])
    assert costs.params(kept) == count_parameters(compacted)


def test_sensitivity_curves_are_sane_cached_and_leave_the_model_unchanged(trained, tmp_path):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    pruner = channel_pruner(trained)
    batches = evaluation_batches(digits_loader(), 4)
    result = analyze_sensitivity(pruner, batches, ratios=(0.25, 0.5, 0.75), show_progress=False)
    assert set(result.curves) == set(pruner.units)
    assert all([p["ratio"] for p in points] == [0.25, 0.5, 0.75] for points in result.curves.values())
    assert all(torch.equal(v, before[k]) for k, v in trained.state_dict().items())
    mean = [sum(points[i]["loss"] for points in result.curves.values()) / len(result.curves)
            for i in range(3)]
    assert result.baseline["loss"] <= mean[0] <= mean[1] <= mean[2]  # more pruning never helps
    assert result.baseline["accuracy"] > 0.5
    assert list((tmp_path / "cache" / "sensitivity").glob("*.json"))
    again = analyze_sensitivity(pruner, batches, ratios=(0.25, 0.5, 0.75), show_progress=False)
    assert again.curves == result.curves
    assert result.plot(tmp_path / "sensitivity.png").stat().st_size > 0


@pytest.mark.parametrize("budget", [{"macs": 0.4}, {"params": 0.3}, {"macs": 0.7}])
def test_macs_and_params_budgets_are_met_within_one_percent(trained, budget):
    pruner = channel_pruner(trained, budget=budget)
    plan = plan_compression(pruner, evaluation_batches(digits_loader(), 2), pruner.config.budget,
                            show_progress=False)
    compacted = compact_copy(trained, plan.kept, INPUTS)
    kind, value = next(iter(budget.items()))
    measure = count_macs if kind == "macs" else (lambda m, _: count_parameters(m))
    achieved = measure(compacted, INPUTS[:1]) / measure(trained, INPUTS[:1])
    assert value - 0.01 <= achieved <= value
    assert plan.predicted[kind] == pytest.approx(achieved)
    with torch.no_grad():  # coupled groups stay consistent: the compacted model runs
        assert compacted(INPUTS).shape == (2, 10)


def test_the_allocator_meets_a_synthetic_latency_budget_where_it_pays_most():
    sizes = {"a": 64, "b": 64, "c": 32}
    per_channel = {"a": 1.0, "b": 0.1, "c": 0.5}  # ms per kept channel (known costs)

    def cost(kept):
        return 5.0 + sum(per_channel[u] * kept[u] for u in kept)

    def loss(unit, kept):  # equally sensitive: the allocator should narrow the costly group
        return 1.0 - kept / sizes[unit]

    candidates = {u: candidate_widths(n, 8, 4, 0.9) for u, n in sizes.items()}
    dense = cost(sizes)
    chosen = allocate(AllocationProblem(candidates, loss, cost), dense / 2)
    assert dense / 2 - 8 * max(per_channel.values()) <= chosen.cost <= dense / 2
    assert chosen.kept["a"] < chosen.kept["c"] / 32 * 64 or chosen.kept["a"] < 64
    assert chosen.kept["b"] == 64  # the cheap group is left alone
    assert all(k % 8 == 0 for k in chosen.kept.values())


def test_an_impossible_budget_names_the_best_achievable_value(trained):
    with pytest.raises(BudgetError, match=r"narrowest allowed widths reach \d+\.\d% of the macs") \
            as info:
        pruner = channel_pruner(trained, budget={"macs": 0.01})
        plan_compression(pruner, evaluation_batches(digits_loader(), 1), pruner.config.budget,
                         show_progress=False)
    reached = float(re.search(r"reach (\d+\.\d)%", str(info.value)).group(1))
    assert reached > 1.0 and info.value.best > 0


def test_overrides_fix_a_group_and_min_channels_and_max_ratio_hold(trained):
    pruner = channel_pruner(trained, budget={"macs": 0.5, "min_channels": 6, "max_ratio": 0.6},
                            overrides={"conv1": 0.25})
    plan = plan_compression(pruner, evaluation_batches(digits_loader(), 1), pruner.config.budget,
                            show_progress=False)
    fixed = next(u for u in pruner.units if "conv1" in pruner.unit_modules[u])
    assert plan.kept[fixed] == round(plan.sizes[fixed] * 0.75)
    for unit, size in plan.sizes.items():
        if unit != fixed:
            assert plan.kept[unit] >= min(size, max(6, round(size * 0.4)))


def test_a_budget_needs_auto_allocation_and_channel_granularity():
    with pytest.raises(Exception, match="allocation='auto'"):
        PruningConfig(granularity="channel", budget={"macs": 0.5})
    with pytest.raises(Exception, match="granularity='channel'"):
        PruningConfig(granularity="unstructured", allocation="auto", budget={"macs": 0.5})
    with pytest.raises(Exception, match="exactly one"):
        Budget(macs=0.5, params=0.5)


def test_the_callback_plans_once_and_a_resumed_run_keeps_the_ratios(tmp_path, monkeypatch):
    def run(ckpt=None, callbacks=()):
        torch.manual_seed(0)
        model = create_model("resnet8", num_classes=10, in_channels=1)
        pruning = Pruning("channel", allocation="auto", budget={"macs": 0.5}, schedule="linear",
                          start_epoch=0, end_epoch=2, example_inputs=INPUTS)
        fit = trainer(3, [pruning, *callbacks], limit_train_batches=4,
                      default_root_dir=str(tmp_path))
        fit.fit(PlainModule(model), train_dataloaders=digits_loader(), ckpt_path=ckpt)
        return model, pruning

    saver = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    model, pruning = run(callbacks=[saver])
    assert pruning.compacted and (tmp_path / "compression_plan.json").is_file()
    achieved = count_macs(model, INPUTS[:1]) / count_macs(create_model(
        "resnet8", num_classes=10, in_channels=1), INPUTS[:1])
    assert 0.49 <= achieved <= 0.5

    def refuse(*args, **kwargs):
        raise AssertionError("a resumed run must reuse the stored plan")

    monkeypatch.setattr("compressor.callbacks._automatic.plan_compression", refuse)
    resumed_model, resumed = run(ckpt=str(tmp_path / "epoch=0.ckpt"))
    assert resumed.plan.kept == pruning.plan.kept
    assert [p.shape for p in resumed_model.parameters()] == [p.shape for p in model.parameters()]


@pytest.mark.slow
def test_a_latency_budget_is_met_on_the_exported_file(trained):
    pruner = channel_pruner(trained, budget={"latency_speedup": 1.3, "batch": 16})
    plan = plan_compression(pruner, evaluation_batches(digits_loader(), 2), pruner.config.budget,
                            precision="fp32", show_progress=False)
    measured = plan.checks[-1]["reference_ms"] / plan.checks[-1]["measured_ms"]
    # On a model this small one allowed step of 16 channels can pass the budget by far (the
    # +-10 % figures are benchmarks/automatic.py's, on real sizes): here the budget must be met.
    assert measured >= 1.3 * (1 - pruner.config.budget.tolerance / 2)
    assert plan.predicted["speedup"] > 1.0 and len(plan.checks) >= 1
    assert plan.channel_step in (4, 8, 16)


def test_removed_blocks_take_their_macs_and_parameters_with_them():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1)
    inputs = torch.randn(2, 1, 28, 28)
    pruner = Pruner(model, PruningConfig(granularity="channel", sparsity=0.5), inputs)
    blocks = [b.path for b in removable_blocks(model, inputs, ())]
    assert len(blocks) == 7  # the blocks whose shortcut is the identity
    costs = build_cost_model(model, pruner.unit_set.groups, inputs[:1], blocks)
    kept = {**costs.dense(), f"block:{blocks[0]}": 0, f"block:{blocks[3]}": 0}
    kept.update({unit: size // 2 for unit, size in kept.items() if unit.startswith("channel")})
    compacted = compact_copy(model, kept, inputs)
    assert costs.macs(kept) == count_macs(compacted, inputs[:1])
    assert costs.params(kept) == count_parameters(compacted)


def test_a_plan_that_removes_blocks_is_followed_and_survives_resume(tmp_path, monkeypatch):
    import compressor.callbacks._automatic as automatic

    real = automatic.plan_compression

    def with_block_removed(pruner, batches, budget, precision):
        plan = real(pruner, batches, budget, precision, show_progress=False)
        plan.kept["block:layers.0.0"] = 0
        plan.sizes["block:layers.0.0"] = 1
        return plan

    monkeypatch.setattr(automatic, "plan_compression", with_block_removed)

    def run(ckpt=None, callbacks=()):
        torch.manual_seed(0)
        model = create_model("resnet8", num_classes=10, in_channels=1)
        pruning = Pruning("channel", allocation="auto", budget={"macs": 0.6, "blocks": False},
                          schedule="linear", start_epoch=0, end_epoch=2, example_inputs=INPUTS)
        fit = trainer(3, [pruning, *callbacks], limit_train_batches=4)
        fit.fit(PlainModule(model), train_dataloaders=digits_loader(), ckpt_path=ckpt)
        return model, pruning

    saver = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    model, pruning = run(callbacks=[saver])
    assert type(model.layers[0][0]).__name__ == "Identity" and pruning.compacted
    resumed_model, resumed = run(ckpt=str(tmp_path / "epoch=0.ckpt"))
    assert type(resumed_model.layers[0][0]).__name__ == "Identity"
    assert resumed.plan.kept == pruning.plan.kept
    assert [p.shape for p in resumed_model.parameters()] == [p.shape for p in model.parameters()]
