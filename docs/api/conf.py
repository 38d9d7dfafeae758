"""Sphinx configuration of the API reference, built from the docstrings by `.ci/run`:
``sphinx-build -W -b html docs/api build/docs`` (warnings are errors)."""

from importlib import metadata

project = "activezarr"
author = "activezarr developers"
release = version = metadata.version("activezarr")
extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx"]
# Signatures keep the annotations as written (``zarr.Array``, ``Mapping[str, Any]``): resolving
# them needs each library's inventory, which CI cannot download.
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
html_theme = "alabaster"
exclude_patterns = ["_build"]
