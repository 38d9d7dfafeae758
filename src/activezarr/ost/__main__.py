"""``python -m activezarr.ost``: the same as ``activezarr ost``."""

from .commands import ost

ost(prog_name="activezarr ost")
