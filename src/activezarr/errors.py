"""Exceptions raised by activezarr; each says what went wrong and what to do about it."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class ActiveZarrError(Exception):
    """Base class of every activezarr error."""


class SelectionError(ActiveZarrError, IndexError, ValueError):
    """A selection that does not fit the array: out of range, zero step, too many indices.

    It is both an IndexError and a ValueError so that code written for numpy catches it.
    """


class UnknownPluginError(ActiveZarrError, KeyError):
    """A plugin name (reduction, backend) that nothing installed provides."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnknownReductionError(UnknownPluginError):
    """A reduction name that no installed plugin provides."""


class UnknownBackendError(UnknownPluginError):
    """A backend name that no installed plugin provides."""


class UnsupportedArrayError(ActiveZarrError, TypeError):
    """An array whose dtype, codecs or layout the active path cannot reduce."""


class CodecNotAllowedError(ActiveZarrError, ValueError):
    """A codec id outside the allow-list (pickle and object codecs are never allowed)."""


class InvalidReductionError(ActiveZarrError, ValueError):
    """A ``ChunkReduction`` config that does not describe a chunk reduction."""


class ChunkDecodeError(ActiveZarrError, ValueError):
    """A chunk whose bytes do not decode to the size its metadata promises."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(f"chunk {key!r}: {message}" if key else message)
        self.key = key


class StorageUnavailableError(ActiveZarrError, ConnectionError):
    """The storage side could not be reached or refused the work; the client may fall back."""


class CredentialsError(ActiveZarrError, PermissionError):
    """Credentials the active server cannot be given (e.g. a session token: Basic auth has no
    field for it). Falling back would hide that the storage side can never serve the data."""


class DeadlineExceededError(ActiveZarrError, TimeoutError):
    """A reduction that ran past its ``deadline`` (seconds, an ``active`` option)."""


class ActiveZarrWarning(UserWarning):
    """Base class of activezarr's warnings."""


class FallbackWarning(ActiveZarrWarning):
    """Some chunks were read and reduced on the client because the storage side could not."""


class ClientReductionWarning(ActiveZarrWarning):
    """The array has no active backend: every chunk will be read and reduced on the client."""


class ChunkReadError(ActiveZarrError, OSError):
    """A chunk neither the storage side nor the client could read (e.g. a reference target
    that is gone): never reduced as if it had not been written."""


def first_problem(exc: ValidationError) -> tuple[str, str, Any]:
    """What a settings model refused first: the field, why (the validator's own message where
    one raised) and the value given."""
    error = exc.errors()[0]
    cause = error.get("ctx", {}).get("error")
    return (".".join(map(str, error["loc"])), str(cause) if cause is not None else error["msg"],
            error.get("input"))
