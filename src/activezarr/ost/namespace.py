"""The MDS's namespace: each file's current layout, kept in memory and in one JSON file."""

from __future__ import annotations

import itertools
import json
import os
import uuid
from pathlib import Path

from .messages import CreateRequest, Entry
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

    def _save(self) -> None:
        temporary = self.state.with_suffix(".tmp")
        temporary.write_text(json.dumps({p: v.model_dump() for p, v in self.files.items()}))
        os.replace(temporary, self.state)

    def create(self, request: CreateRequest) -> FileLayout:
        """A fresh layout for a new version of a file; it is not visible until committed."""
        count = self.stripe_count if request.stripe_count is None else request.stripe_count
        count = self.n_osts if count == -1 else max(1, min(count, self.n_osts))
        first = next(self._first_ost)
        return FileLayout(fid=uuid.uuid4().hex, size=request.size,
                          stripe_size=request.stripe_size or self.stripe_size,
                          osts=tuple((first + i) % self.n_osts for i in range(count)))

    def commit(self, path: str, layout: FileLayout) -> FileLayout | None:
        """Make ``layout`` the file at ``path``; returns the layout it replaced."""
        if any(ost >= self.n_osts for ost in layout.osts):
            raise ValueError(f"layout {layout.fid} names OSTs beyond the {self.n_osts} there are")
        path = normalize(path)
        if self._is_directory(path):
            raise ValueError(f"{path!r} is a directory")
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
