"""Explicit registries filled from entry points, as numcodecs does for codecs."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named plugins: built-ins registered in code, third parties through an entry-point group."""

    def __init__(self, group: str, kind: str, error: type[KeyError] = KeyError) -> None:
        self.group = group
        self.kind = kind
        self.error = error
        self._plugins: dict[str, T] = {}
        # Entry points load on first use. Kept apart rather than told apart by type: a
        # distribution finder from the importlib_metadata backport yields its own EntryPoint.
        self._pending: dict[str, EntryPoint] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator registering a built-in under ``name``."""

        def decorate(plugin: T) -> T:
            self._plugins[name] = plugin
            return plugin

        return decorate

    def _load_entry_points(self) -> None:
        if not self._loaded:
            for ep in entry_points(group=self.group):
                if ep.name not in self._plugins:
                    self._pending.setdefault(ep.name, ep)
            self._loaded = True

    def builtin_names(self) -> list[str]:
        """The names registered in code so far (before any entry point is loaded)."""
        return list(self._plugins)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted({*self._plugins, *self._pending})

    def __contains__(self, name: object) -> bool:
        # A built-in is found without scanning every installed distribution's entry points
        # (tens of milliseconds in a fresh process); they would not override it anyway.
        if name in self._plugins:
            return True
        self._load_entry_points()
        return name in self._pending

    def get(self, name: str) -> T:
        """The plugin called ``name``; the registry's error lists the available names if none."""
        if name not in self:
            raise self.error(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        if name not in self._plugins:
            self._plugins[name] = self._pending.pop(name).load()
        return self._plugins[name]
