"""Backends: how chunk reductions reach the storage side, keyed by fsspec protocol."""

from .base import Backend, BatchResult, ChunkJob, backends
from .client import ClientBackend
from .file import FileBackend
from .reference import ReferenceBackend

__all__ = ["Backend", "BatchResult", "ChunkJob", "ClientBackend", "FileBackend", "ReferenceBackend",
           "backends"]
