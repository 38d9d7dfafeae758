"""The MDS's namespace: each file's current layout, kept in memory and in one JSON file."""

from __future__ import annotations

import itertools
import json
import os
import uuid
from pathlib import Path

from ...servers.errors import BadRequest
from .messages import MAX_STRIPES, CreateRequest, Entry
from .striping import FileLayout


def normalize(path: str) -> str:
    """Paths are kept without leading or trailing slashes; the root is ``""``."""
    return path.strip("/")


class Namespace:
    """Files by path, striped over ``n_osts`` OSTs; directories are implied by the paths."""

    def __init__(self, state: str | os.PathLike[str], n_osts: int, stripe_size: int,
                 stripe_count: int) -> None:
        self.state = Path(state)
        self.n_osts = n_osts
        self.stripe_size = stripe_size
        self.stripe_count = stripe_count
        self.files: dict[str, FileLayout] = {}
        if self.state.exists():
            saved = json.loads(self.state.read_text())
            self.files = {p: FileLayout.model_validate(v) for p, v in saved.items()}
        # Lustre's allocator also spreads first OSTs round-robin over new files.
        self._first_ost = itertools.cycle(range(n_osts))
        #: Layouts created and not yet committed, by fid: only these may be committed, once, so
        #: that no two files ever share an object (an alias's removal would delete the other's).
        self.pending: dict[str, FileLayout] = {}

    def _save(self) -> None:
        temporary = self.state.with_suffix(".tmp")
        temporary.write_text(json.dumps({p: v.model_dump() for p, v in self.files.items()}))
        os.replace(temporary, self.state)

    def create(self, request: CreateRequest) -> FileLayout:
        """A fresh layout for a new version of a file; it is not visible until committed."""
        count = self.stripe_count if request.stripe_count is None else request.stripe_count
        count = self.n_osts if count == -1 else max(1, min(count, self.n_osts))
        first = next(self._first_ost)
        layout = FileLayout(fid=uuid.uuid4().hex, size=request.size,
                            stripe_size=request.stripe_size or self.stripe_size,
                            osts=tuple((first + i) % self.n_osts for i in range(count)))
        if layout.stripes > MAX_STRIPES:
            raise BadRequest(f"{layout.size} bytes in stripes of {layout.stripe_size} make "
                             f"{layout.stripes} stripes, more than {MAX_STRIPES}; use a larger "
                             "stripe_size")
        if len(self.pending) >= MAX_STRIPES:  # abandoned creations: forget the oldest
            del self.pending[next(iter(self.pending))]
        self.pending[layout.fid] = layout
        return layout

    def commit(self, path: str, layout: FileLayout) -> FileLayout | None:
        """Make ``layout`` the file at ``path``; returns the layout it replaced.

        ``layout`` must be one this MDS created and nobody committed yet.
        """
        if self.pending.get(layout.fid) != layout:
            raise BadRequest(f"layout {layout.fid} was not created here, or is already "
                             "committed")
        path = normalize(path)
        if not path or self._is_directory(path):
            raise BadRequest(f"{path!r} is a directory")
        del self.pending[layout.fid]
        old = self.files.get(path)
        self.files[path] = layout
        self._save()
        return old

    def remove(self, path: str) -> FileLayout | None:
        """Forget the file at ``path``; returns its layout, None if there was none."""
        old = self.files.pop(normalize(path), None)
        if old is not None:
            self._save()
        return old

    def _is_directory(self, path: str) -> bool:
        prefix = f"{path}/" if path else ""
        return any(p.startswith(prefix) for p in self.files) or path == ""

    def stat(self, path: str) -> Entry | None:
        path = normalize(path)
        layout = self.files.get(path)
        if layout is not None:
            return Entry(name=path, type="file", size=layout.size, layout=layout)
        return Entry(name=path, type="directory") if self._is_directory(path) else None

    def list(self, path: str) -> list[Entry] | None:
        """The children of a directory (the file itself for a file), None if nothing is there."""
        path = normalize(path)
        if path in self.files:
            return [self.stat(path)]  # type: ignore[list-item]
        prefix = f"{path}/" if path else ""
        children: dict[str, Entry] = {}
        for name, layout in self.files.items():
            if not name.startswith(prefix):
                continue
            child, slash, _ = name[len(prefix):].partition("/")
            full = prefix + child
            children[full] = (Entry(name=full, type="directory") if slash else
                              Entry(name=full, type="file", size=layout.size, layout=layout))
        if not children and path:
            return None
        return sorted(children.values(), key=lambda e: e.name)
