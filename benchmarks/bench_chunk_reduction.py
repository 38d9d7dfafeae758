"""What a storage side spends on one chunk request besides I/O: the request's
``ChunkReduction`` built and run to its response map (``servers.operations.execute``)."""

from __future__ import annotations

import json

import numpy as np

from activezarr.protocol import ChunkRequest
from activezarr.servers.operations import execute


class Execute:
    """One chunk of float32, reduced over its first axis; small chunks show the fixed cost."""

    params = ([4, 128], ["sum", "stats"], [False, True])
    param_names = ("side", "op", "lean")

    def setup(self, side: int, op: str, lean: bool) -> None:
        data = np.arange(side * side, dtype="<f4").reshape(side, side)
        self.raw = data.tobytes()
        self.request = ChunkRequest.model_validate_json(json.dumps({
            "interface_type": "s3", "url": "http://store/bucket/key", "dtype": "float32",
            "shape": [side, side], "axis": [0], "accumulate": "float"}))

    def time_execute(self, side: int, op: str, lean: bool) -> None:
        execute(op, self.request, self.raw, 1 << 30, lean=lean)
