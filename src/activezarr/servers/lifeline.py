"""A child process's tie to its parent: it stops when the parent has gone, however it went.

The parent (:func:`activezarr.servers.processes.spawn`) hands the child a pipe as its stdin
and keeps the only other end; when the parent exits, SIGKILL included, the child reads EOF.
Linux's parent-death signal is not used: it follows the *thread* that spawned the child, so
a cluster started from a worker thread would die with that thread, and other systems lack it.

``python -m activezarr.servers.lifeline PATH`` is the reaper of a temporary folder: it waits
for its parent to go, then removes PATH once the parent's servers have stopped writing in it.
Standard library only, so that the reaper costs little memory.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import threading
import time

#: Set in a child's environment by the parent that holds the other end of its stdin.
LIFELINE_VARIABLE = "ACTIVEZARR_LIFELINE"
#: Seconds a folder must stay removed before the reaper is done: the servers that were writing
#: in it finish their requests within their own shutdown (2 s for the cluster's).
SETTLE = 3.0
#: Seconds a reaper keeps removing a folder that comes back, at most.
REAP_LIMIT = 60.0


def _drain(fd: int) -> None:
    """Return at EOF on ``fd``: the parent has gone."""
    while os.read(fd, 4096):
        pass


def follow_parent() -> None:
    """In a child whose parent set :data:`LIFELINE_VARIABLE`: stop now if the parent has
    already gone, else SIGTERM this process (a server's clean shutdown) once it goes."""
    if os.environ.pop(LIFELINE_VARIABLE, None) != "stdin":
        return  # started by hand: stdin is a terminal or /dev/null, not a lifeline
    readable, _, _ = select.select([0], [], [], 0)
    if readable and not os.read(0, 4096):
        raise SystemExit("activezarr: the parent process has gone; not starting")

    def stop_at_eof() -> None:
        _drain(0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_at_eof, name="activezarr-lifeline", daemon=True).start()


def reap(path: str) -> None:
    """Once the parent has gone, remove ``path`` until it has stayed removed :data:`SETTLE`
    seconds (a server stopping may finish a write in it), for :data:`REAP_LIMIT` at most."""
    _drain(0)
    limit = time.monotonic() + REAP_LIMIT
    settled = time.monotonic() + SETTLE
    while time.monotonic() < min(settled, limit):
        if os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
            settled = time.monotonic() + SETTLE
        time.sleep(0.1)


if __name__ == "__main__":
    reap(sys.argv[1])
