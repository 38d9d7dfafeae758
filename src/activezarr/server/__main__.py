"""``python -m activezarr.server``: the same as ``activezarr serve``."""

from .cli import serve

serve(prog_name="activezarr serve")
