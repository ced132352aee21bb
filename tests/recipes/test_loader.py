import pytest

from compressor.errors import ConfigError, UnknownNameError
from compressor.recipes.loader import builtin_recipes, load_recipe, recipe_from_dict


def test_builtin_recipes_load_by_name():
    names = builtin_recipes()
    assert "fashion-mnist-baseline" in names
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name
        assert recipe.description


def test_load_from_path_with_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nmodel: {name: resnet8}\ndata: {name: digits}\n")
    recipe = load_recipe(path, {"train.epochs": 3, "data.subset": 100})
    assert recipe.train.epochs == 3
    assert recipe.data.options == {"subset": 100}


def test_unknown_builtin_recipe():
    with pytest.raises(UnknownNameError, match="fashion-mnist-baseline"):
        load_recipe("no-such-recipe")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_every_problem_is_listed():
    with pytest.raises(ConfigError) as info:
        recipe_from_dict({"name": "x", "trian": {}, "train": {"epochs": 0},
                          "model": {"name": "resnet20", "widht_mult": 2}}, "test.yaml")
    message = str(info.value)
    assert "test.yaml" in message
    assert "`trian`: unknown key (did you mean 'train'?)" in message
    assert "train.epochs" in message and "got 0" in message
    assert "did you mean 'width_mult'" in message


def test_unknown_model_and_data_names():
    with pytest.raises(ConfigError, match="(?s)Unknown model 'resnet21'.*Unknown data set 'mnist'"):
        recipe_from_dict({"name": "x", "model": {"name": "resnet21"}, "data": {"name": "mnist"}})


def test_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(path)


def test_duplicate_keys_are_rejected_with_the_key_and_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("name: x\nmodel: {name: resnet20}\ndistillation:\n  teacher: self\n"
                    "  alpha: 0.7\n  alpha: 0.5\n")
    with pytest.raises(ConfigError, match=r"(?s)not valid YAML.*duplicate key 'alpha'.*line 6"):
        load_recipe(path)


def test_builtin_recipes_have_no_duplicate_keys():
    for name in builtin_recipes():
        load_recipe(name)  # the strict parser raises on a repeated key
