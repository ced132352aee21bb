import re

import pytest
import torch

from compressor.distillation import AdapterSpec, adapter_spec, build_adapter
from compressor.errors import ConfigError


@pytest.mark.parametrize("student, teacher, expected", [
    ((8, 4, 5, 5), (8, 4, 5, 5), None),
    ((8, 4, 5, 5), (8, 16, 5, 5), AdapterSpec("conv2d", 4, 16)),
    ((8, 32), (8, 64), AdapterSpec("linear", 32, 64)),
    ((8, 10, 32), (8, 10, 48), AdapterSpec("linear", 32, 48)),
])
def test_adapter_choice(student, teacher, expected):
    spec = adapter_spec(torch.Size(student), torch.Size(teacher), "'a' -> 'b'")
    assert spec == expected
    if spec is not None:
        adapter = build_adapter(spec)
        assert adapter(torch.randn(student)).shape == teacher


@pytest.mark.parametrize("student, teacher", [((8, 4, 5, 5), (8, 4, 3, 3)), ((8, 4), (8, 4, 1, 1)),
                                              ((8, 10, 32), (8, 9, 32))])
def test_unbridgeable_shapes_name_the_pair_and_shapes(student, teacher):
    shapes = rf"{re.escape(str(student))} to the teacher feature {re.escape(str(teacher))}"
    with pytest.raises(ConfigError, match=rf"'a' -> 'b'.*{shapes}"):
        adapter_spec(torch.Size(student), torch.Size(teacher), "'a' -> 'b'")


def test_initialisation_is_reproducible_with_a_generator():
    spec = AdapterSpec("conv2d", 3, 5)
    first = build_adapter(spec, torch.Generator().manual_seed(7))
    second = build_adapter(spec, torch.Generator().manual_seed(7))
    pairs = zip(first.parameters(), second.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_spec_round_trip_and_bad_kind():
    spec = AdapterSpec("linear", 3, 4)
    assert AdapterSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="conv2d, linear|linear, conv2d"):
        AdapterSpec.from_dict({"kind": "conv3d", "in_features": 1, "out_features": 2})
