"""``compressor recipes schema``: a JSON schema every built-in recipe satisfies."""

import inspect
import json

import jsonschema
import pytest

from compressor.callbacks import Pruning
from compressor.cli import main
from compressor.recipes.json_schema import recipe_json_schema
from compressor.recipes.loader import _builtin_folder, _parse, builtin_recipes


@pytest.fixture(scope="module")
def validator():
    schema = recipe_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", sorted(builtin_recipes()))
def test_every_builtin_recipe_satisfies_the_schema(validator, name):
    data = _parse(_builtin_folder().joinpath(f"{name}.yaml").read_text(encoding="utf-8"))
    errors = [e.message for e in validator.iter_errors(data)]
    assert not errors, errors


@pytest.mark.parametrize(("section", "why"), [
    ({"pruning": [{"granularity": "channel", "sparsty": 0.5}]}, "sparsty"),
    ({"pruning": [{"granularity": "channel", "sparsity": "half"}]}, "half"),
    ({"quantization": {"start_epoch": "two"}}, "two"),
    ({"distillation": {"teacher": "self", "alpha": "much"}}, "much"),
    ({"trian": {"epochs": 2}}, "trian"),
])
def test_mistakes_are_flagged_by_the_schema(validator, section, why):
    errors = " ".join(e.message for e in validator.iter_errors({"name": "x", **section}))
    assert why in errors


def test_the_pruning_section_lists_every_callback_setting(validator):
    definitions = recipe_json_schema()["$defs"]
    schema = definitions["PruningConfig"]
    arguments = set(inspect.signature(Pruning.__init__).parameters) - {"self", "config",
                                                                       "example_inputs"}
    assert set(schema["properties"]) == arguments
    assert schema["additionalProperties"] is False
    assert schema["properties"]["compact"]["default"] is True
    assert "name pattern" in schema["properties"]["overrides"]["description"]
    assert "teacher" in definitions["DistillationConfig"]["properties"]
    assert "losses" not in definitions["DistillationConfig"]["properties"]  # not for files


def test_the_command_prints_the_schema(capsys):
    assert main(["recipes", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["properties"]["pruning"]["type"] == "array"
