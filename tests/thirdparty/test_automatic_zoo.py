"""Automatic allocation on third-party architectures: the predicted MACs and parameters equal
the compacted model's, and a channel budget is met within 1 % (with whole blocks weighed too, a
removed block can overshoot it by its own size: it is still met)."""

from __future__ import annotations

import pytest
import torch

from compressor.automatic import compact_copy, plan_compression
from compressor.graph.macs import count_macs
from compressor.pruning import Pruner, PruningConfig
from compressor.utils.modules import count_parameters
from tests.thirdparty.zoo import ZOO, build

pytestmark = pytest.mark.zoo

MODELS = ["torchvision/resnet18", "torchvision/mobilenet_v3_small", "timm/convnext_atto",
          "transformers/bert", "timm/resnet10t"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSOR_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", ["macs", "params"])
@pytest.mark.parametrize("blocks", [False, True])
def test_a_budget_is_met_on_a_third_party_model(name, kind, blocks):
    spec = ZOO[name]
    model = build(name).eval()
    classes = 2 if spec.source == "transformers" and spec.vocabulary else 10
    batches = [(spec.inputs(8, seed=s), torch.randint(0, classes, (8,))) for s in range(2)]
    example = batches[0][0][:2]
    config = PruningConfig(granularity="channel", allocation="auto", budget={kind: 0.5, "blocks": blocks})
    pruner = Pruner(model, config, example)
    plan = plan_compression(pruner, batches, config.budget, show_progress=False)
    compacted = compact_copy(model, plan.kept, example)
    measure = (lambda m: count_macs(m, example[:1])) if kind == "macs" else count_parameters
    achieved = measure(compacted) / measure(model)
    assert plan.predicted[kind] == pytest.approx(achieved, abs=1e-9)
    assert (0.45 if blocks else 0.49) <= achieved <= 0.5
