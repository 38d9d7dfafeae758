"""Pooled HTTP sessions: one per event loop, closed on that loop when it shuts down (a loop
of ``asyncio.run``) or at exit (zarr's), so that no "Unclosed client session" is left."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

import activezarr
from activezarr.transport import sessions
from s3_servers import S3, ActiveServer
from test_s3_backend import s3_array

SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    import zarr, activezarr
    from activezarr.backends.base import BatchResult
    from activezarr.backends.servers import ActiveServers, ServerOptions
    from activezarr.protocol import SCHEMA_PATH

    url, options, server = json.loads(sys.argv[1])
    store = activezarr.ActiveStore.from_url(url, storage_options=options,
                                            active={"server": server})
    red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"), missing=None)

    async def main():
        # a session of this loop's own, kept open by a connection to the server
        await ActiveServers(ServerOptions(server=server)).call("GET", SCHEMA_PATH, BatchResult([], "s3"))
        # and a reduction from inside asyncio.run (it runs on zarr's loop)
        print(await asyncio.to_thread(red.mean))

    asyncio.run(main())
    print(red.mean(axis=0).sum())  # after that loop closed: zarr's session, closed at exit
""")


def test_no_session_is_left_unclosed_by_asyncio_run_or_at_exit(
        moto_s3: S3, active_server: ActiveServer) -> None:
    data = np.arange(64, dtype="float32").reshape(8, 8)
    array = s3_array(moto_s3, active_server.url, data, chunks=(4, 4))
    url = "s3://" + str(array.store.root).strip("/")
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", SCRIPT,
         json.dumps([url, moto_s3.storage_options, active_server.url])],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(data.mean()), str(data.mean(axis=0).sum())]
    assert "Unclosed" not in done.stderr and "ResourceWarning" not in done.stderr, done.stderr


def test_reductions_share_one_http_session(moto_s3: S3, active_server: ActiveServer) -> None:
    data = np.ones((8, 8), "float32")
    red = activezarr.ActiveReduction(s3_array(moto_s3, active_server.url, data, chunks=(4, 4)),
                                     missing=None)

    def open_sessions() -> set[int]:
        return {id(s) for pool in sessions._pools.values() for s in pool.sessions.values()
                if not s.closed}

    red.sum()
    first = open_sessions()
    red.mean(axis=0)
    assert open_sessions() == first != set()
