"""``python -m activezarr.ost``: the same as ``activezarr ost``."""

from .cli import ost

ost(prog_name="activezarr ost")
