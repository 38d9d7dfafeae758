"""How a server's settings are declared: once, as fields of a pydantic model whose type,
bounds, default and help text the commands turn into options (``activezarr.commands.settings``:
each option also reads an ``ACTIVEZARR_*`` variable)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.config import JsonDict


def setting(default: Any = None, help: str = "", *, option: str | None = None,
            shown: str | None = None, **constraints: Any) -> Any:
    """A field that is also a command-line option: ``help`` is its help text, ``option`` its
    name where it is not the field's (``allow-root`` for ``roots``), ``shown`` the default as the
    help says it where the value would mislead (a number of CPUs). ``default`` may be a
    function (called for each model) or ``...`` (required)."""
    extra: JsonDict = {k: v for k, v in {"option": option, "shown": shown}.items() if v is not None}
    if callable(default):
        return Field(default_factory=default, description=help, json_schema_extra=extra,
                     **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


class Settings(BaseModel):
    """Settings: frozen, and a name the model does not declare is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Listening(Settings):
    """Where a server listens, how many connections it keeps, and what it logs."""

    host: str = setting("127.0.0.1", "Interface to listen on.")
    port: int = setting(8080, "Port to listen on.", ge=0, le=65535)
    #: More are answered before anything is read: what idle or stalled connections hold stays
    #: bounded.
    max_connections: int = setting(
        512, "Connections open at once; more are answered 503 and closed.", ge=1)
    access_log: bool = setting(False, "Log a line per request (aiohttp's access log).")


def same_as(model: type[BaseModel], name: str) -> Any:
    """The field ``name`` of ``model``, for another model holding the same setting: its type
    bounds, default and help stay declared in one place."""
    return model.model_fields[name]


def _names(value: Any) -> tuple[str, ...]:
    """``("a,b", "c")`` or ``"a,b c"`` as ``("a", "b", "c")``: names given comma-separated,
    repeated, or in one environment variable."""
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    return tuple(n.strip() for item in items for n in str(item).split(",") if n.strip())


#: Plugin reductions a server loads (``--reductions A,B``): a plugin is code run on the storage
#: side, so only those its operator names are loaded.
Reductions = Annotated[tuple[str, ...], BeforeValidator(_names)]


def reductions_setting() -> Any:
    """The ``--reductions`` setting of every server."""
    return setting((), "Plugin reductions to serve besides the built-ins, comma-separated: a "
                   "plugin is code run here, so only those named are loaded.")
