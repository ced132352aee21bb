"""The third-party zoo: every architecture through the Pruning callback, compaction and ONNX
Runtime, as a user would run it (``benchmarks/thirdparty_zoo.py`` writes the same measurements
as the table the README links)."""

from __future__ import annotations

import pytest

from tests.thirdparty.harness import compress
from tests.thirdparty.zoo import ZOO

pytestmark = pytest.mark.zoo

CASES = [(name, "channel") for name in ZOO] + [(name, "head") for name, spec in ZOO.items()
                                               if spec.heads]


@pytest.mark.parametrize("name, granularity", CASES, ids=[f"{n}-{g}" for n, g in CASES])
def test_compacts_exactly_trains_on_and_matches_in_onnx_runtime(name, granularity):
    result = compress(name, granularity)
    assert result.compressed_output_shape == result.output_shape
    assert result.masked_vs_compacted <= 1e-4, "the compacted model differs from the masked one"
    assert result.onnx_accepted, f"ONNX Runtime differs by {result.onnx_max_abs_diff:.3g}"
    assert result.compressed_parameters < result.parameters
    if granularity == "channel":
        assert result.ratio <= ZOO[name].max_ratio, result.excluded


def test_half_of_the_channels_leave_at_most_60_percent_of_the_parameters_in_most_of_the_zoo():
    exceptions = [name for name, spec in ZOO.items() if spec.max_ratio > 0.6]
    assert all(ZOO[name].why for name in exceptions)
    assert len(exceptions) <= 0.1 * len(ZOO)
    assert len(ZOO) >= 20 and {spec.source for spec in ZOO.values()} == {
        "torchvision", "timm", "transformers"}
