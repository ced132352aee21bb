"""The JSON schema of a recipe file, for editors (``compressor recipes schema``).

The ``model``, ``data``, ``train``, ``baseline`` and ``export`` sections come from the pydantic
recipe model; the ``pruning``, ``distillation`` and ``quantization`` sections hold the keyword
arguments of the callbacks of the same name, so their properties (types, defaults and the
descriptions of the callbacks' docstrings) are derived from those constructors: what the schema
shows is exactly what the callbacks accept.
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any

__all__ = ["recipe_json_schema", "callback_schema"]

#: Constructor arguments that a YAML file cannot hold (tensors, modules).
_NOT_IN_FILES = {"example_inputs"}


def _described(callback: type) -> dict[str, str]:
    """``Args:`` descriptions of a Google-style docstring, by argument name."""
    doc = inspect.getdoc(callback) or ""
    section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    section = re.split(r"\n\S", "\n" + section.lstrip("\n"), maxsplit=1)[0] if section else ""
    found: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        match = re.match(r"^\s{4}(\w+):\s*(.*)$", line)
        if match:
            name, found[match.group(1)] = match.group(1), match.group(2).strip()
        elif name and line.strip():
            found[name] += " " + line.strip()
    return found


def _type_schema(annotation: Any) -> dict[str, Any]:
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(annotation).json_schema()
    except Exception:  # noqa: BLE001 - a type pydantic cannot describe (e.g. nn.Module | str)
        return {}


def callback_schema(callback: type, definitions: dict[str, Any]) -> dict[str, Any]:
    """JSON schema of one callback's keyword arguments (unknown keys rejected); the named types
    it refers to (``#/$defs/...``) are added to ``definitions``."""
    hints = typing.get_type_hints(callback.__init__)
    descriptions = _described(callback)
    properties: dict[str, Any] = {}
    for name, parameter in inspect.signature(callback.__init__).parameters.items():
        if name == "self" or name in _NOT_IN_FILES:
            continue
        schema = _type_schema(hints.get(name, Any))
        definitions.update(schema.pop("$defs", {}))
        if parameter.default is not inspect.Parameter.empty and \
                isinstance(parameter.default, (bool, int, float, str, type(None))):
            schema["default"] = getattr(parameter.default, "value", parameter.default)
        if name in descriptions:
            schema["description"] = descriptions[name]
        properties[name] = schema
    return {"type": "object", "title": callback.__name__, "properties": properties,
            "additionalProperties": False,
            "description": (inspect.getdoc(callback) or "").split("\n", 1)[0]}


def recipe_json_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of a recipe file."""
    from compressor.callbacks.distillation import Distillation
    from compressor.callbacks.pruning import Pruning
    from compressor.callbacks.quantization import QuantizationAwareTraining
    from compressor.recipes.schema import Recipe

    schema = Recipe.model_json_schema()
    definitions = schema.setdefault("$defs", {})
    properties = schema["properties"]
    properties["pruning"] = {"type": "array", "items": callback_schema(Pruning, definitions),
                             "description": "Pruning callbacks, one entry each."}
    for key, callback in (("distillation", Distillation),
                          ("quantization", QuantizationAwareTraining)):
        properties[key] = {"anyOf": [callback_schema(callback, definitions), {"type": "null"}]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
