"""What the ``activezarr`` commands share: click parameter types and one-line errors."""

from __future__ import annotations

import json
import os
import re
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..errors import ActiveZarrError

#: What the library raises for a bad request or unreadable data; shown as one line, no traceback.
LIBRARY_ERRORS = (ActiveZarrError, OSError, IndexError, ValueError, TypeError, KeyError,
                  RuntimeError)
#: Packages whose errors are about the storage or the data (an endpoint, a credential, a file).
STORAGE_PACKAGES = {"aiobotocore", "aiohttp", "botocore", "fsspec", "h5py", "kerchunk",
                    "numcodecs", "s3fs", "zarr"}
#: What to do, for errors whose own message does not say.
HINTS = {
    "NoCredentialsError": "pass --storage-options '{\"key\": \"...\", \"secret\": \"...\"}', "
                          "or '{\"anon\": true}' for a public bucket",
}
#: Set to see the traceback of an error instead of its one line.
TRACEBACK_VARIABLE = "ACTIVEZARR_TRACEBACK"


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Errors become ``Error: ...``, exit code 1: users need the message, not the stack."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        # str(KeyError) is the repr of its message; the message itself reads better.
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        text = " ".join(text.split()) or type(exc).__name__
        if type(exc).__name__ in HINTS:
            text = f"{text}: {HINTS[type(exc).__name__]}"
        elif not (isinstance(exc, LIBRARY_ERRORS)
                  or type(exc).__module__.split(".")[0] in STORAGE_PACKAGES):
            text = (f"unexpected {type(exc).__name__}: {text} "
                    f"({TRACEBACK_VARIABLE}=1 shows the traceback)")
        _quiet_abandoned_coroutines()
        raise click.ClickException(text) from exc


def _quiet_abandoned_coroutines() -> None:
    """The command ends with an error: requests that zarr left pending when it struck are
    collected at exit, where aiobotocore cannot close them cleanly. That noise (a traceback
    per request) would bury the one line that matters; other unraisable errors still show."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.object, types.CoroutineType):
            previous(unraisable)

    sys.unraisablehook = hook


def parse_selection(text: str) -> tuple[Any, ...]:
    """``"0:10,:,::2"`` -> ``(slice(0, 10), slice(None), slice(None, None, 2))``.

    Entries are ints, ``start:stop:step`` slices (every part optional) or ``...``, as in numpy.
    """
    return tuple(_parse_entry(entry.strip()) for entry in text.split(","))


def _parse_entry(entry: str) -> Any:
    if entry == "...":
        return ...
    try:
        if ":" not in entry:
            return int(entry)
        parts = entry.split(":")
        if len(parts) > 3:
            raise ValueError
        return slice(*(int(p) if p.strip() else None for p in parts))
    except ValueError:
        raise ValueError(f"bad entry {entry!r}: use an integer, a slice start:stop:step "
                         "(parts optional) or '...'") from None


class SelectionType(click.ParamType):
    """A numpy-style selection written as text, e.g. ``0:10,:,::2``."""

    name = "selection"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[Any, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_selection(value)
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


class JsonObjectType(click.ParamType):
    """A JSON object given on the command line, e.g. ``'{"anon": true}'``."""

    name = "json"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"{value!r} is not valid JSON ({exc})", param, ctx)
        if not isinstance(parsed, dict):
            self.fail(f"{value!r} is not a JSON object", param, ctx)
        return parsed


class MissingType(click.ParamType):
    """``cf`` (rules from the CF attributes), ``none``, or the rules as a JSON object."""

    name = "cf|none|json"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str | dict[str, Any] | None:
        if value in ("cf", "none"):
            return None if value == "none" else "cf"
        return JsonObjectType().convert(value, param, ctx)


#: A comparison with a number, as ``--where`` takes it: ``>298.15``, ``!= 0``.
CONDITION = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*")


def parse_condition(text: str) -> tuple[str, float]:
    """``(op, number)`` of a ``--where`` comparison, or a ValueError saying what it takes."""
    match = CONDITION.fullmatch(text)
    try:
        if match is None:
            raise ValueError(text)
        return match.group(1), float(match.group(2))
    except ValueError:
        raise ValueError(f"--where {text!r} is not a comparison with a number, e.g. '>298.15' "
                         "(ops > >= < <= == !=)") from None


class OneLineErrorsGroup(click.Group):
    """A command group whose commands fail with one line (:func:`one_line_errors`)."""

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors():
            return super().invoke(ctx)
