"""The typed configs: one schema per part, shared by the library, the callbacks and recipes."""

import inspect

import pytest

from compressor.callbacks import Distillation, ExportONNX, Pruning, QuantizationAwareTraining
from compressor.distillation import DistillationConfig
from compressor.errors import ConfigError, InvalidTypeError, UnknownNameError
from compressor.export import ExportConfig
from compressor.pruning import Granularity, PruningConfig
from compressor.quantization import QuantizationConfig
from compressor.recipes.loader import recipe_from_dict
from compressor.recipes.schema import build_callbacks

PAIRS = [(Pruning, PruningConfig, {"granularity": "channel", "sparsity": 0.5}),
         (QuantizationAwareTraining, QuantizationConfig, {"start_epoch": 1}),
         (Distillation, DistillationConfig, {"alpha": 0.7}),
         (ExportONNX, ExportConfig, {"path": "m.onnx", "batch_sizes": (1,)})]


@pytest.mark.parametrize(("callback", "config_type", "settings"), PAIRS)
def test_a_callback_takes_its_config_or_the_same_keywords(callback, config_type, settings):
    by_keywords = callback(**settings).config
    by_config = callback(config=config_type(**settings)).config
    assert by_keywords == by_config == config_type(**settings)
    fields = set(config_type.model_fields)
    assert fields <= set(inspect.signature(callback.__init__).parameters)


@pytest.mark.parametrize(("callback", "config_type", "settings"), PAIRS)
def test_keywords_override_a_given_config(callback, config_type, settings):
    config = config_type(**settings)
    changed = callback(config=config, student="net").config
    assert changed.student == "net" and config.student is None  # the given config is frozen


@pytest.mark.parametrize("config_type", [PruningConfig, QuantizationConfig, DistillationConfig,
                                         ExportConfig])
def test_unknown_keys_get_the_closest_name(config_type):
    known = next(iter(config_type.model_fields))
    with pytest.raises(ConfigError, match=rf"`{known}x`: unknown key \(did you mean '{known}'\?\)"):
        config_type(**{f"{known}x": 1})


def test_enums_accept_strings_in_any_case_and_suggest_the_closest():
    assert PruningConfig(granularity="CHANNEL", sparsity=0.5).granularity is Granularity.CHANNEL
    with pytest.raises(UnknownNameError, match="Did you mean 'channel'"):
        PruningConfig(granularity="chanel", sparsity=0.5)


def test_a_bad_value_names_the_field_the_value_and_what_it_expects():
    with pytest.raises(ConfigError, match=r"`sparsity`: .*less than 1 \(got 1.5\) -- Target"):
        PruningConfig(sparsity=1.5)
    with pytest.raises(InvalidTypeError, match=r"`quantize_matmul`: .*boolean \(got 'yes'\)"):
        QuantizationConfig(quantize_matmul="yes")


def test_a_wrong_config_type_is_refused():
    with pytest.raises(InvalidTypeError, match=r"Pruning\(config=...\) must be a PruningConfig"):
        Pruning(config=QuantizationConfig())


def test_recipe_sections_are_the_configs_the_callbacks_use():
    recipe = recipe_from_dict({
        "name": "x",
        "pruning": [{"granularity": "channel", "sparsity": 0.5, "schedule": "linear",
                     "start_epoch": 0, "end_epoch": 2}],
        "distillation": {"teacher": "self", "alpha": 0.7},
        "quantization": {"start_epoch": 3, "keep_float": "@first"}})
    assert isinstance(recipe.pruning[0], PruningConfig)
    pruning, distillation, quantization = build_callbacks(recipe)
    assert pruning.config is recipe.pruning[0]
    assert distillation.config is recipe.distillation
    assert quantization.config is recipe.quantization
    assert quantization.config.keep_float == ("@first",)


def test_a_recipe_lists_every_problem_with_its_key_path():
    with pytest.raises(ConfigError) as info:
        recipe_from_dict({"name": "x",
                          "pruning": [{"granularity": "channel", "sparsty": 0.5},
                                      {"sparsity": 2}],
                          "quantization": {"start_epoch": 3, "freeze_bn_epoch": 1}})
    message = str(info.value)
    assert "`pruning.0.sparsty`: unknown key (did you mean 'sparsity'?)" in message
    assert "`pruning.1.sparsity`: Input should be less than 1 (got 2)" in message
    assert "`freeze_bn_epoch` (1) must not be before the QAT start (3)" in message


def test_impossible_schedules_are_rejected_by_the_config():
    with pytest.raises(ConfigError, match="not both"):
        PruningConfig(sparsity=0.5, start_epoch=0, end_step=10)
    with pytest.raises(ConfigError, match="one shot"):
        PruningConfig(granularity="n:m", schedule="cubic", start_epoch=0, end_epoch=2)
    with pytest.raises(ConfigError, match="needs `end` > `start`"):
        PruningConfig(sparsity=0.5, schedule="cubic", start_epoch=2)
