"""``python -m activezarr.servers.ost``: the same as ``activezarr ost``."""

from ...commands.ost import ost

ost(prog_name="activezarr ost")
