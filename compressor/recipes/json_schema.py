"""The JSON schema of a recipe file, for editors (``compressor recipes schema``).

It is the schema of the recipe model itself: the compression sections are the typed configs
of the parts, so what the schema shows (types, defaults, descriptions) is exactly what loading
the recipe validates. Fields a YAML file cannot hold (modules, callables) are left out.
"""

from __future__ import annotations

from typing import Any

__all__ = ["recipe_json_schema"]


def recipe_json_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of a recipe file."""
    from compressor.recipes.schema import Recipe

    schema = Recipe.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
