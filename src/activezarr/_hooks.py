"""Registers ``DataArray.active`` on ``import activezarr`` without importing xarray.

A server process imports activezarr but never xarray, so it must not pay for it; a user who
imports xarray (before or after activezarr) gets the accessor, as with other xarray plugins.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

ACCESSOR_MODULE = "activezarr.xarray"


class _AfterXarray(importlib.abc.MetaPathFinder):
    """Finds xarray as the other finders would, and registers the accessor once it has run."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != "xarray":
            return None
        sys.meta_path.remove(self)  # fire once; also keeps find_spec below from recursing
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            try:
                importlib.import_module(ACCESSOR_MODULE)
            except ImportError as exc:  # xarray itself still imports; say why .active is absent
                warnings.warn(f"DataArray.active is not registered: {exc}", ImportWarning,
                              stacklevel=2)

        loader.exec_module = exec_module
        return spec


def register_xarray_accessor() -> None:
    """Register the accessor now if xarray is loaded, else as soon as it is imported."""
    if "xarray" in sys.modules:
        importlib.import_module(ACCESSOR_MODULE)
    elif not any(isinstance(f, _AfterXarray) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterXarray())
