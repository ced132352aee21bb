"""``compressor analyze``: sensitivity curves and the latency table of a recipe's model."""

import json

import pytest

from compressor.cli import main

RECIPE = """name: digits-analyze
model: {name: resnet8}
data: {name: digits}
pruning:
  - granularity: channel
    allocation: auto
    budget: {latency_speedup: 1.5, batch: 8, max_batches: 2}
"""


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSOR_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return path


def test_sensitivity_writes_curves_and_a_plot(recipe, tmp_path, capsys):
    assert main(["analyze", "sensitivity", str(recipe), "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "sensitivity.json").read_text())
    assert data["curves"] and all(len(points) == 3 for unit, points in data["curves"].items()
                                  if unit.startswith("channel"))
    assert any(unit.startswith("block:") for unit in data["curves"])
    assert (tmp_path / "out" / "sensitivity.png").stat().st_size > 0
    assert "sensitivity.json" in capsys.readouterr().out


@pytest.mark.slow
def test_latency_writes_the_table_and_a_plot(recipe, tmp_path):
    assert main(["analyze", "latency", str(recipe), "--out", str(tmp_path / "out"),
                 "--precision", "fp32"]) == 0
    data = json.loads((tmp_path / "out" / "latency.json").read_text())
    assert data["layers"] and data["reference_ms"] > 0 and data["precision"] == "fp32"
    assert (tmp_path / "out" / "latency.png").stat().st_size > 0
