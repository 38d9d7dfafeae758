"""Command-line options made from a settings model: each field is an option with its help and
default, read also from an ``ACTIVEZARR_*`` variable, and the values are checked by the model,
so that a setting is declared once (its name, type, bounds, default and help)."""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import click
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ..errors import first_problem

PREFIX = "ACTIVEZARR_"
Model = TypeVar("Model", bound=BaseModel)
_CLICK_TYPES: dict[Any, click.ParamType] = {int: click.INT, float: click.FLOAT, str: click.STRING,
                                            Path: click.Path(path_type=Path)}


def option_name(name: str, field: FieldInfo) -> str:
    """``--max-body`` for ``max_body``, or the name the field declares (``--allow-root``)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return "--" + str(extra.get("option", name)).replace("_", "-")


def envvar(option: str, prefix: str = PREFIX) -> str:
    """``ACTIVEZARR_MAX_BODY`` for ``--max-body``."""
    return prefix + option.lstrip("-").replace("-", "_").upper()


def is_option(field: FieldInfo) -> bool:
    """Fields declared with :func:`~activezarr.servers.active.config.setting` are options."""
    return isinstance(field.json_schema_extra, dict)


def _default(field: FieldInfo) -> tuple[Any, str | bool]:
    """The default click is given (the model's: click shows it), and how the help shows it."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "shown" in extra:  # made for each model: None leaves it to the model
        return None, str(extra["shown"])
    if field.default is PydanticUndefined:
        return None, False
    return field.default, field.default not in (None, (), False)


def _option(name: str, field: FieldInfo, prefix: str
            ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):  # X | None
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    multiple = get_origin(annotation) is tuple
    if multiple:
        annotation = get_args(annotation)[0]
    option = option_name(name, field)
    default, shown = _default(field)
    kwargs: dict[str, Any] = {"envvar": envvar(option, prefix), "show_envvar": True,
                              "help": field.description, "default": default,
                              "show_default": shown, "required": field.is_required()}
    if annotation is bool:
        kwargs.update(is_flag=True)
    else:
        kwargs.update(multiple=multiple, type=_CLICK_TYPES.get(annotation, click.STRING))
    return click.option(option, name, **kwargs)


def options_from(model: type[BaseModel], prefix: str = PREFIX
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command with an option per field of ``model`` (in the model's order), each
    also read from ``prefix`` + its name; the command gets the values given, for
    :func:`settings_from`."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        for name, field in reversed(list(model.model_fields.items())):
            if is_option(field):
                function = _option(name, field, prefix)(function)
        return function

    return decorate


def settings_from(model: type[Model], given: dict[str, Any]) -> Model:
    """``model`` made from the options given (those left out take the model's defaults); a
    value the model refuses is a usage error naming its option and saying why."""
    values = {k: v for k, v in given.items() if v is not None and v != ()}
    try:
        return model(**values)
    except ValidationError as exc:
        raise click.UsageError(_first_problem(model, exc)) from None


def _first_problem(model: type[BaseModel], exc: ValidationError) -> str:
    name, why, given = first_problem(exc)
    field = model.model_fields.get(name.split(".")[0])
    if field is None:  # a rule between settings: its message names them
        return why
    return f"invalid value for {option_name(name.split('.')[0], field)} {given!r}: {why}"
