"""The S3 part of ``activezarr demo``: the sample data in an embedded S3, reduced by the server.

moto's S3 (server mode) and ``activezarr serve`` run on free loopback ports for the duration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import zarr
from zarr.storage import FsspecStore

from ..client.store import ActiveStore
from ..servers.processes import active_server
from .demo import Datasets, PartUnavailable, Row, compare

BUCKET = "demo"


def s3_objects(data: Datasets) -> Iterator[Row]:
    """Each sample dataset copied byte for byte into S3, reduced on the active server."""
    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise PartUnavailable(
            f"S3 part skipped ({exc.name} is not installed): pip install 'activezarr[demo]'"
        ) from None
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # any free port
    access_log = logging.getLogger("werkzeug")  # moto's server logs every request it serves
    level = access_log.level
    access_log.setLevel(logging.ERROR)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{moto.get_host_and_port()[1]}"
        options = {"endpoint_url": endpoint, "key": "demo-key", "secret": "demo-secret"}
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir(BUCKET)
        with active_server("--upstream", endpoint) as (server, _):
            for name, path in data.paths.items():
                url = f"s3://{BUCKET}/{path.name}"
                fs.put(str(path), f"{BUCKET}/{path.name}", recursive=True)
                store = ActiveStore.from_url(url, storage_options=options,
                                             active={"server": server}, read_only=True)
                yield from compare(name, zarr.open_array(store, mode="r"),
                                   FsspecStore.from_url(url, storage_options=options,
                                                        read_only=True))
    finally:
        moto.stop()
        access_log.setLevel(level)
