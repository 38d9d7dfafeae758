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
        #: Names still holding an entry point: tracked by name, since the entry points' class
        #: is whichever ``importlib.metadata`` implementation found the distribution (some
        #: packages install ``importlib_metadata``'s finders, with their own EntryPoint class).
        self._unloaded: set[str] = set()
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator registering a built-in under ``name``."""

        def decorate(plugin: T) -> T:
            self._plugins[name] = plugin
            self._unloaded.discard(name)
            return plugin

        return decorate

    def _load_entry_points(self) -> None:
        if not self._loaded:
            for ep in entry_points(group=self.group):
                if ep.name not in self._plugins:
                    self._plugins[ep.name] = ep  # loaded on first use
                    self._unloaded.add(ep.name)
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
        if name in self._unloaded:
            plugin = self._plugins[name] = plugin.load()  # type: ignore[union-attr]
            self._unloaded.discard(name)
        return plugin  # type: ignore[return-value]
