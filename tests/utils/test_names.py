import pytest

from compressor.errors import ConfigError
from compressor.utils.names import check_patterns, matches, matching


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("conv1", "conv1", True),
    ("conv1", "conv10", False),
    ("layer1", "layer1.0.conv1", True),  # a module's pattern covers what is inside it
    ("layer1.*", "layer1.0.conv1", True),
    ("layer?", "layer2.conv", True),
    ("layer1.0", "layer1.01", False),
    ("*.conv1", "layer1.0.conv1", True),
    ("Conv1", "conv1", False),  # case-sensitive
    ("layer[12]", "layer3.conv", False),
    ("blocks.0", "blocks.0", True),
    ("fc.weight", "fc", False),
])
def test_glob_semantics(pattern, name, expected):
    assert matches(pattern, name) is expected


def test_regular_expressions_are_not_patterns():
    assert not matches("layer.+", "layer1")
    assert matches("layer.+", "layer.+")


def test_matching_and_check_patterns():
    names = ["stem", "layer1.0.conv", "layer2.0.conv", "fc"]
    assert matching(["layer*", "fc"], names) == {"layer1.0.conv", "layer2.0.conv", "fc"}
    check_patterns("ignore", ["layer1"], names)
    with pytest.raises(ConfigError, match=r"`ignore` entry 'layr1' matches no layer\. Did you mean"):
        check_patterns("ignore", ["layr1"], names)
