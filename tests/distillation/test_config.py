import pytest

from compressor.distillation import DistillationConfig, FeatureLoss
from compressor.errors import ConfigError, InvalidTypeError, UnknownNameError


def test_defaults_and_layer_lists():
    config = DistillationConfig(features={"a": "b"}, attention=["c", "a"])
    assert config.temperature == 4.0 and config.alpha == 0.5
    assert config.feature_loss is FeatureLoss.MSE
    assert config.attention == {"c": "c", "a": "a"}
    assert config.student_layers == ["a", "c"] and config.teacher_layers == ["b", "c", "a"]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"temperature": 0}, ConfigError, r"`temperature`: .*greater than 0.*typically 1-8"),
    ({"temperature": -1.0}, ConfigError, "got -1"),
    ({"temperature": "hot"}, InvalidTypeError, "temperature"),
    ({"alpha": 1.5}, ConfigError, r"`alpha`: .*less than or equal to 1 \(got 1.5\)"),
    ({"alpha": -0.1}, ConfigError, "alpha"),
    ({"feature_weight": -1}, ConfigError, "feature_weight"),
    ({"attention_weight": float("nan")}, ConfigError, "attention_weight"),
    ({"feature_loss": "l1"}, UnknownNameError, "Valid values: cosine, mse"),
    ({"features": "layer3"}, InvalidTypeError, "features"),
    ({"features": {"layer3": 3}}, InvalidTypeError, "layer names"),
    ({"losses": {"kd_loss": lambda s, t, x: s.sum()}}, ConfigError, "kd_loss"),
    ({"losses": {"extra": 3}}, InvalidTypeError, "callable"),
    ({"losses": [print]}, InvalidTypeError, "mapping"),
])
def test_bad_settings_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        DistillationConfig(**kwargs)
