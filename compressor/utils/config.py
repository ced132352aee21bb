"""``Config``: the base of every typed configuration (pruning, quantization, distillation,
export, recipes).

A config is a frozen pydantic model. Unknown keys are rejected with the closest known name
("did you mean"); enum fields accept their values as strings in any case; a bad value raises a
:mod:`compressor.errors` error naming the field, the value and the fix. The same class validates
keyword arguments (``PruningConfig(sparsity=0.5)``) and recipe sections (nested in the recipe
model, validated once when the recipe loads).
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from compressor.errors import CompressorError, ConfigError, InvalidTypeError, closest_names
from compressor.utils.checks import check_enum

__all__ = ["Config", "NonNegativeInt", "PositiveInt", "NonNegativeFloat", "Fraction", "StrictBool",
           "config_error", "settings_config", "with_config_signature"]

C = TypeVar("C", bound="Config")
F = TypeVar("F", bound=Callable[..., Any])

#: An integer >= 0 (booleans and floats are refused).
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
#: An integer >= 1.
PositiveInt = Annotated[StrictInt, Field(ge=1)]
#: A number >= 0.
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
#: A fraction in ``[0, 1)``.
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class Config(BaseModel):
    """Base of the typed configs: frozen, strict about keys, friendly about enum strings."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True,
                              use_attribute_docstrings=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise config_error(type(self), error) from None

    # Only the error type differs from BaseModel.__init__: nested configs (recipe sections) are
    # still validated in place, so a recipe reports every problem with its full key path.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @field_validator("*", mode="before")
    @classmethod
    def _enum_from_string(cls, value: Any, info: ValidationInfo) -> Any:
        enum_type = _enum_of(cls.model_fields[str(info.field_name)].annotation)
        if enum_type is not None and isinstance(value, str):
            return check_enum(str(info.field_name), value, enum_type)
        return value

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Build from a mapping (e.g. a section of a YAML file)."""
        if not isinstance(values, Mapping):
            raise InvalidTypeError(f"{cls.__name__} needs a mapping of settings, got "
                                   f"{type(values).__name__}.")
        return cls(**dict(values))

    def settings(self) -> dict[str, Any]:
        """The fields as given (enums as their string values), for files and logs."""
        return self.model_dump(mode="json", exclude_defaults=True)


def _enum_of(annotation: Any) -> type[enum.Enum] | None:
    """The enum type of a field annotated ``E`` or ``E | None``."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [_enum_of(arg) for arg in typing.get_args(annotation)]
        found = [m for m in members if m is not None]
        return found[0] if len(found) == 1 else None
    return None


def config_error(config_type: type[BaseModel], error: ValidationError) -> CompressorError:
    """One :mod:`compressor.errors` error for a pydantic ``ValidationError``.

    A single error raised by our own checks keeps its type and message; otherwise every problem
    is listed by field, with the value given and the field's description as the hint.
    """
    what = config_type.__name__
    items = error.errors()
    original = items[0].get("ctx", {}).get("error") if len(items) == 1 else None
    if isinstance(original, CompressorError):
        return original
    lines = [problem_line(item, config_type) for item in items]
    type_errors = all(item["type"].endswith(("_type", "_parsing")) for item in items)
    kind = InvalidTypeError if type_errors else ConfigError
    if len(lines) == 1:
        return kind(f"{what}: {lines[0]}")
    return kind(f"{what}:\n" + "\n".join(f"  - {line}" for line in lines))


def problem_line(item: Mapping[str, Any], root: type[BaseModel]) -> str:
    """``"`field`: message (got value) -- hint"`` for one pydantic error of a ``root`` model:
    an unknown key gets the closest known one, a bad value its field's description."""
    location = ".".join(str(part) for part in item["loc"]) or "value"
    *parents, leaf = item["loc"] or ("",)
    owner = _model_at(root, parents)
    if item["type"] == "extra_forbidden":
        known = list(owner.model_fields) if owner is not None else []
        close = closest_names(str(leaf), known)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        return f"`{location}`: unknown key{guess}. Known keys: {', '.join(known) or '(none)'}."
    message = str(item["msg"]).removeprefix("Value error, ")
    quiet = item["type"] in ("missing", "value_error")
    shown = "" if quiet else f" (got {item.get('input')!r})"
    hint = "" if item["type"] == "value_error" else _field_hint(owner, leaf)  # ours say the fix
    return f"`{location}`: {message}{shown}{hint}"


def _model_at(root: type[BaseModel], path: Sequence[Any]) -> type[BaseModel] | None:
    """The model class found by following field names (list indices skipped) from ``root``."""
    current: Any = root
    for part in path:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part)) if _is_model(current) else None
        if field is None:
            return None
        current = _inner_model(field.annotation)
    return current if _is_model(current) else None


def _inner_model(annotation: Any) -> Any:
    """The model class inside ``M``, ``M | None`` or ``list[M]``."""
    if _is_model(annotation):
        return annotation
    for argument in typing.get_args(annotation):
        found = _inner_model(argument)
        if found is not None:
            return found
    return None


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _field_hint(owner: type[BaseModel] | None, name: Any) -> str:
    """`` -- <the first sentence of the field's description>``, if it has one."""
    field = owner.model_fields.get(str(name)) if owner is not None else None
    description = " ".join((field.description or "").split()) if field is not None else ""
    return f" -- {description.split('. ')[0].rstrip('.')}." if description else ""


def settings_config(config_type: type[C], config: C | None, settings: Mapping[str, Any],
                    who: str) -> C:
    """``config``, or ``config_type(**settings)``, or ``config`` with ``settings`` changed.

    Raises:
        InvalidTypeError: ``config`` is not a ``config_type``.
    """
    if config is None:
        return config_type(**settings)
    if not isinstance(config, config_type):
        raise InvalidTypeError(
            f"{who}(config=...) must be a {config_type.__name__}, got {type(config).__name__}. "
            f"Pass a {config_type.__name__}(...) or give its fields as keyword arguments.")
    return config_type(**{**dict(config), **settings}) if settings else config


def with_config_signature(config_type: type[Config]) -> Callable[[F], F]:
    """Decorator: replace the ``**settings`` of an ``__init__`` by the fields of its config in
    the signature (for ``help()``, IDEs and the recipe schema)."""
    def decorate(init: F) -> F:
        own = [p for p in inspect.signature(init).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        hints = typing.get_type_hints(config_type)
        fields = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                    default=info.get_default(call_default_factory=True),
                                    annotation=hints.get(name, info.annotation))
                  for name, info in config_type.model_fields.items()
                  if name not in {p.name for p in own}]
        init.__signature__ = inspect.Signature([*own, *fields])  # type: ignore[attr-defined]
        return init
    return decorate
