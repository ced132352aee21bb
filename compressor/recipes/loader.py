"""Finding and loading recipes: built-in ones by name, or YAML files by path."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from compressor.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:  # the schema imports the callbacks (Lightning): only validation needs it
    from compressor.recipes.schema import Recipe

__all__ = ["builtin_recipes", "load_recipe", "recipe_from_dict"]

_BUILTIN_PACKAGE = "compressor.recipes"


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping (YAML keeps the last
    silently, so a duplicated setting would hide the one the user meant)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r}; keep only one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse(text: str) -> Any:
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506  # a SafeLoader subclass


def _builtin_folder() -> Traversable:
    return resources.files(_BUILTIN_PACKAGE).joinpath("builtin")


def builtin_recipes() -> dict[str, str]:
    """Built-in recipe names mapped to their one-line descriptions."""
    found = {}
    for entry in sorted(_builtin_folder().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            data = _parse(entry.read_text(encoding="utf-8")) or {}
            description = str(data.get("description", "")).strip()
            found[entry.name[:-5]] = description.splitlines()[0] if description else ""
    return found


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Load a recipe from a YAML file path or by built-in name, apply dotted ``overrides``
    (e.g. ``{"train.epochs": 2}``) and validate it.

    Raises:
        UnknownNameError: neither a file nor a built-in recipe of that name exists.
        ConfigError: the recipe does not match the schema (every problem is listed).
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"Recipe file {path} does not exist.")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        entry = _builtin_folder().joinpath(f"{name_or_path}.yaml")
        if not entry.is_file():
            raise UnknownNameError("recipe", str(name_or_path), builtin_recipes(),
                                   hint="Pass a path to a .yaml file for your own recipe.")
        text, source = entry.read_text(encoding="utf-8"), f"{name_or_path} (built-in)"
    try:
        data = _parse(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"Recipe {source} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"Recipe {source} must be a mapping of sections, got {type(data).__name__}.")
    return recipe_from_dict(apply_overrides(data, overrides or {}), source)


def recipe_from_dict(data: dict[str, Any], source: str = "(dict)") -> Recipe:
    """Validate a recipe given as a plain dictionary."""
    from pydantic import ValidationError

    from compressor.recipes.schema import Recipe, format_validation_error

    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        raise format_validation_error(error, source) from None


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted-key ``overrides`` set (``"train.epochs": 2``)."""
    import copy

    result = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = result
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"Cannot override {dotted!r}: {key!r} is not a section.")
            node = child
        node[leaf] = value
    return result
