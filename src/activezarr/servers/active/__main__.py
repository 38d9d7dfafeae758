"""``python -m activezarr.servers.active``: the same as ``activezarr serve``."""

from ...commands.serve import serve

serve(prog_name="activezarr serve")
