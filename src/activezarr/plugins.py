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
        self._plugins: dict[str, T | EntryPoint] = {}  # entry points load on first use
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
                self._plugins.setdefault(ep.name, ep)  # loaded on first use
            self._loaded = True

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._plugins)

    def get(self, name: str) -> T:
        """The plugin called ``name``; the registry's error lists the available names if none."""
        self._load_entry_points()
        try:
            plugin = self._plugins[name]
        except KeyError:
            raise self.error(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            ) from None
        if isinstance(plugin, EntryPoint):
            plugin = self._plugins[name] = plugin.load()
        return plugin
