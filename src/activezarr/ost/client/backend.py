"""The ``ost`` path: each chunk reduces where the striped file system's layout says it should.

Uncompressed chunks reduce on every OST holding part of them, in parallel; the few elements
cut by stripe boundaries come back as bytes and are reduced here, exactly. A compressed chunk
inside one OST reduces on that OST; one spread over several goes to the OSS or to the client,
as ``active={"spread_compressed": "oss" | "client"}`` says (default ``oss``).

A batch costs one ``/v2/batch`` per OST (and one to the OSS) holding every part it serves;
parts of chunks landing in the same output cells are merged there (``combine``), and here
across servers, so that chunks stacked along a reduced axis come back as one partial.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cbor2
import numpy as np
from pydantic import Field
from zarr.abc.store import Store

from ...backends.base import Backend, BatchResult, ChunkJob, Options, backends, region_labels
from ...backends.servers import within_limits
from ...chunk.partial import Partial
from ...chunk.parts import Piece, reduce_loose
from ...errors import ChunkDecodeError, UnsupportedArrayError
from ...planning.array_layout import ArrayLayout
from ...planning.chunks import ChunkTask
from ...planning.cost import (
    PLAIN_RESULT_MAP,
    RESULT_MAP,
    STORED_BYTES_FIELD,
    Traits,
    stored_chunk_bytes,
)
from ...protocol import CannotExpress, build_request, share_weights
from ...transport.http import remember_unavailable
from ..wire.layouts import encode_layouts
from ..wire.messages import (
    EXTENSIONS,
    MAX_BATCH,
    MAX_BATCH_BODY,
    MAX_MEMORY,
    OPS,
    PartRequest,
    partial_bytes,
)
from ..wire.namespace import normalize
from ..wire.striping import FileLayout, by_ost
from ..wire.transport import OSTUnavailableError, RemoteError
from .filesystem import OSTFileSystem
from .placement import Placement, SpreadPolicy, place

#: The results one request to an OST or the OSS may reserve: half its memory, the other half
#: left for the items it reads (large batches of chunks with large, distinct outputs are
#: split, not refused).
RESULTS_ROOM = MAX_MEMORY // 2


@dataclass
class _Batch:
    """What one reduction batch sends to each server: items, and the position each serves."""

    items: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    positions: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, server: str, position: int, item: dict[str, Any]) -> None:
        self.items[server].append(item)
        self.positions[server].append(position)


@dataclass
class _Gathered:
    """The servers' answers gathered per output region (``combine`` label)."""

    labels: list[int]
    partials: dict[int, Partial] = field(default_factory=dict)
    loose: dict[int, list[Piece]] = field(default_factory=lambda: defaultdict(list))
    #: Positions with at least one part served (merged into their label's partial).
    served: set[int] = field(default_factory=set)
    refused: dict[int, str] = field(default_factory=dict)


class OSTOptions(Options):
    """The ost backend's ``active`` options."""

    spread_compressed: SpreadPolicy = Field("oss", description="where a compressed chunk "
                                            "spread over several OSTs reduces: oss or client")


@backends.register("ost")
class OSTBackend(Backend):
    """Reduces chunks of an ``ost://`` store on its OSTs, its OSS or the client, per layout.

    ``bytes_from_storage`` counts the LAN (storage to client); ``Report.links`` adds the OST
    disk reads and the storage network (OST to OSS), as the servers' ``/metrics`` also count.
    """

    name = "ost"
    #: The OSTs and the OSS merge the parts of a batch sharing an output region, so a call's
    #: answers do not grow with it, and reserve each item's memory as it starts, not the
    #: batch's; every call costs a layouts answer and one answer per OST. So calls are large:
    #: up to ``max_batch`` chunks and 512 MiB decoded, shared by the OSTs (128 MiB each of
    #: 4, about a second of work, well within a request's timeout).
    combine_batch_bytes = 512 * 2**20
    max_batch_chunks = MAX_BATCH
    options_model = OSTOptions
    options: OSTOptions

    def __init__(self, store: Store, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(store, options)
        fs = getattr(store, "fs", None)
        if not isinstance(fs, OSTFileSystem):
            raise UnsupportedArrayError("the ost backend needs a store on an ost:// file system")
        self.fs = fs
        self.client = fs.client
        self.root = normalize(str(getattr(store, "root", "")))
        self.spread = self.options.spread_compressed
        self._layouts: dict[str, FileLayout | None] = {}
        # One instance serves one reduction, made in its task: a server that stalls is asked
        # once, by a batch or by the client's fallback, not once a request.
        remember_unavailable()

    async def traits(self, layout: ArrayLayout) -> Traits:
        """Answers counted as their CBOR bodies; an uncompressed chunk answers once per OST
        holding part of it (striped as this file system stripes), a compressed one once (its
        OST or the OSS). Batching, combining and lean answers as this class and the OSTs say."""
        cluster = await self.client.cluster()
        stripe = self.fs.stripe_size or cluster.stripe_size
        count = cluster.stripe_count if self.fs.stripe_count is None else self.fs.stripe_count
        count = len(cluster.osts) if count == -1 else count
        parts = 1 if layout.codecs else max(1, min(count, -(-layout.chunk_nbytes // stripe)))
        # Each chunk's layout comes from the MDS as a row of CBOR columns (a uuid4 fid).
        sample = FileLayout(fid="0" * 32, size=layout.chunk_nbytes, stripe_size=stripe,
                            osts=tuple(range(count)))
        one, two = (len(encode_layouts([sample] * n)) for n in (1, 2))
        # Compressed chunks on one OST each answer from the OSTs; spread ones from the OSS.
        spread = bool(layout.codecs) and count > 1 and stored_chunk_bytes(layout) > stripe
        lean = "lean" in EXTENSIONS
        # Their answers leave out the stored bytes: the requests state them.
        return Traits(combines=self.combine_batch_bytes > 0,
                      batch_chunks=self.batch_chunks(layout.chunk_nbytes),
                      encoding="lean" if lean else "cbor", framing=0,
                      result_map=RESULT_MAP - STORED_BYTES_FIELD if lean else PLAIN_RESULT_MAP,
                      combined_item=len(cbor2.dumps({"combined": 0})), answers_per_chunk=parts,
                      plain_framing=0, lookup_bytes=two - one, lookup_framing=2 * one - two,
                      servers=1 if spread else len(cluster.osts),
                      packs_weights="weights-packed" in EXTENSIONS)

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    async def _layouts_of(self, keys: Sequence[str], result: BatchResult
                          ) -> list[FileLayout | None]:
        """The layouts of the files holding ``keys`` (None: never written), asked of the MDS
        once per file and ``MAX_BATCH`` files per call; the calls count in ``result``."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._layouts]
        for start in range(0, len(missing), MAX_BATCH):
            part = missing[start:start + MAX_BATCH]
            found, nbytes = await self.client.layouts([self._path(k) for k in part])
            result.requests += 1
            result.bytes_from_storage += nbytes
            self._layouts.update(zip(part, found))
        return [self._layouts[k] for k in keys]

    async def reduce(self, job: ChunkJob, tasks: Sequence[ChunkTask]) -> BatchResult:
        result = BatchResult([None] * len(tasks), path=self.name)
        layouts = await self._layouts_of([t.key for t in tasks], result)
        batch, on_client = _Batch(), []
        for i, (task, layout) in enumerate(zip(tasks, layouts)):
            if layout is None:
                continue  # never written: the engine uses the fill value
            offset, size = _stored_range(task, layout)
            compressed = bool(job.kernel.spec.codecs)
            if not compressed and size != job.kernel.nbytes:
                raise ChunkDecodeError(f"stored {size} bytes, expected {job.kernel.nbytes}",
                                       task.key)
            placement = place(layout, offset, size, compressed=compressed, spread=self.spread)
            if placement.path == "ost" and len(placement.osts) > 1 and (
                    task.weights is not None or task.labels is not None):
                # Stripe parts are not whole selections: weights and groups go whole, to the
                # OSS, which gathers the chunk.
                placement = replace(placement, path="oss")
            if placement.path != self.name:
                result.paths[i] = placement.path
            if placement.path == "client":
                on_client.append((i, layout, placement))
            elif not await self._plan(job, task, i, layout, placement, batch):
                result.failed[i] = f"the {placement.path} path cannot express this chunk's request"
        answers = _Gathered(region_labels(tasks))
        await asyncio.gather(
            *(self._send(job, tasks, server, batch, answers, result) for server in batch.items),
            self._on_client(job, tasks, on_client, result))
        _settle(job, tasks, answers, result)
        _count_stored(tasks, layouts, result)
        return result

    async def _plan(self, job: ChunkJob, task: ChunkTask, position: int, layout: FileLayout,
                    placement: Placement, batch: _Batch) -> bool:
        """Add the items of one chunk to ``batch``; False when the protocol cannot say them."""
        cluster = await self.client.cluster()
        if placement.path == "oss":
            built = self._request(job, task, f"ost://{self.fs.host}/{self._path(task.key)}",
                                  _stored_range(task, layout))
            if built is None or cluster.oss is None:
                return False
            op, body = built
            batch.add(cluster.oss, position, {"op": op, **body})
            return True
        built = self._request(job, task, f"{cluster.osts[0]}/objects/{layout.fid}", None)
        if built is None:
            return False
        op, body = built
        for ost, extents in by_ost(placement.extents).items():
            batch.add(cluster.osts[ost], position,
                      {"op": op, **body, "url": f"{cluster.osts[ost]}/objects/{layout.fid}",
                       "extents": PartRequest.extents_of(extents)})
        return True

    def _request(self, job: ChunkJob, task: ChunkTask, url: str,
                 byte_range: tuple[int, int] | None) -> tuple[str, dict[str, Any]] | None:
        """(op, body) in PROTOCOL.md terms; None when the protocol cannot say it."""
        try:
            return build_request(job.kernel.spec, task.selection, interface_type="ost", url=url,
                                 byte_range=byte_range, extensions=EXTENSIONS,
                                 # The cluster says which plugin reductions it serves by
                                 # answering: one it does not is each item's error.
                                 operations=(*OPS, job.kernel.spec.op),
                                 weights=task.weights, labels=task.labels, spans=task.spans)
        except CannotExpress:
            return None

    async def _send(self, job: ChunkJob, tasks: Sequence[ChunkTask], server: str,
                    batch: _Batch, answers: _Gathered, result: BatchResult) -> None:
        """One ``/v2/batch`` to ``server`` (more only past its limits); answers gathered."""
        items, positions = batch.items[server], batch.positions[server]
        words = job.kernel.aggregation.words
        runs = _fit_results([partial_bytes(words, math.prod(_cells(tasks[i])))
                             for i in positions],
                            [answers.labels[i] for i in positions], RESULTS_ROOM)
        start = 0
        for length in runs:
            for group in within_limits(items[start:start + length], MAX_BATCH, MAX_BATCH_BODY):
                served = positions[start:start + len(group)]
                start += len(group)
                body = {"requests": share_weights(group), "lean": True,
                        "combine": [answers.labels[i] for i in served]}
                try:
                    replies, nbytes = await self.client.batch(server, body)
                except (RemoteError, OSTUnavailableError) as exc:
                    # Refused whole, or the server is down: its chunks go to the client, the
                    # others are kept.
                    replies, nbytes = [{"error": {"message": str(exc)}}] * len(group), 0
                result.requests += 1
                result.bytes_from_storage += nbytes
                result.bytes_to_storage += len(json.dumps(body))  # as the transport sends it
                for i, item, reply in zip(served, group, replies):
                    _gather_reply(job, tasks[i], i, item["op"], reply, answers)

    async def _on_client(self, job: ChunkJob, tasks: Sequence[ChunkTask],
                         on_client: Sequence[tuple[int, FileLayout, Placement]],
                         result: BatchResult) -> None:
        """The spread chunks the client reduces (by policy), gathered with one read per OST."""
        if not on_client:
            return
        raws = await self.client.gather_many(
            [(layout, *_stored_range(tasks[i], layout)) for i, layout, _ in on_client])
        result.requests += len({ost for _, _, placement in on_client for ost in placement.osts})
        result.bytes_from_storage += sum(map(len, raws))
        for (i, _, _), raw in zip(on_client, raws):
            task = tasks[i]
            result.partials[i] = await asyncio.to_thread(
                job.kernel.reduce, raw, task.selection, task.key, weights=task.weights,
                labels=task.labels, spans=task.spans)


def _stored_range(task: ChunkTask, layout: FileLayout) -> tuple[int, int]:
    """(offset, size) of the chunk's stored bytes in its file."""
    return task.byte_range or (0, layout.size)


def _count_stored(tasks: Sequence[ChunkTask], layouts: Sequence[FileLayout | None],
                  result: BatchResult) -> None:
    """The stored bytes of the chunks served, and the links they crossed: the OSTs read each
    from disk on every path; the OSS path also carries it over the storage network."""
    for i, (task, layout) in enumerate(zip(tasks, layouts)):
        if layout is not None and i not in result.failed:
            size = _stored_range(task, layout)[1]
            result.bytes_stored += size
            result.links.update(disk_read=size,
                                storage=size if result.paths.get(i) == "oss" else 0)
    result.links = +result.links


def _gather_reply(job: ChunkJob, task: ChunkTask, position: int, op: str,
                  reply: Mapping[str, Any], answers: _Gathered) -> None:
    """Fold one server's answer for the chunk at ``position`` into its label's partial."""
    if "error" in reply:
        error = reply["error"]
        answers.refused[position] = str(error.get("message") if isinstance(error, Mapping)
                                        else error)
        return
    answers.served.add(position)
    answers.loose[position].extend((start, data) for start, data in reply.get("loose", ()))
    if "combined" in reply:
        return  # merged by the server into another position's answer
    part = job.kernel.read(reply)
    # An OST answers for the output cells its parts counted, and says which (``region``).
    region = tuple(slice(a, b) for a, b in reply.get("region") or ())
    _partial_of(job, task, answers, answers.labels[position]).merge(part, region)


def _cells(task: ChunkTask) -> tuple[int, ...]:
    """The shape of the output cells ``task`` lands in."""
    return tuple(len(r) if isinstance(r, np.ndarray) else len(range(r.start, r.stop))
                 for r in task.region)


def _partial_of(job: ChunkJob, task: ChunkTask, answers: _Gathered, label: int) -> Partial:
    """The partial gathering the answers for ``label``, whose cells are ``task``'s."""
    if label not in answers.partials:
        answers.partials[label] = job.kernel.empty(_cells(task))
    return answers.partials[label]


def _fit_results(results: Sequence[int], labels: Sequence[int], room: int) -> list[int]:
    """The lengths of consecutive runs of a server's items, each run one request, whose
    results fit ``room`` bytes: a request reserves one partial per label (the largest of its
    items'), and a server refuses a batch whose results and largest item pass its memory."""
    runs: list[int] = []
    held: dict[int, int] = {}
    total = length = 0
    for need, label in zip(results, labels):
        grows = max(0, need - held.get(label, 0))
        if length and total + grows > room:
            runs.append(length)
            held, total, length = {}, 0, 0
            grows = need
        held[label] = max(held.get(label, 0), need)
        total += grows
        length += 1
    return [*runs, length] if length else runs


def _settle(job: ChunkJob, tasks: Sequence[ChunkTask], answers: _Gathered,
            result: BatchResult) -> None:
    """The gathered answers as the batch's partials: one per output region, at its first
    position served; the others ``combined``.

    A chunk refused by one server while another served a part of it cannot be taken out of the
    partial of its region (the server merged that part with others): every chunk of that region
    then goes to the client, which is exact.
    """
    spoiled = {answers.labels[i] for i in answers.refused if i in answers.served}
    for i, reason in answers.refused.items():
        result.failed[i] = reason
    for i in sorted(answers.served):
        label = answers.labels[i]
        if label in spoiled and i not in result.failed:
            result.failed[i] = (f"a chunk of the same output region was refused "
                                f"({answers.refused[_first_refused(answers, label)]})")
    holders: dict[int, int] = {}
    for i in sorted(answers.served - result.failed.keys()):
        label = answers.labels[i]
        if answers.loose[i]:
            answers.partials[label].merge(reduce_loose(job.kernel.spec, tasks[i].selection,
                                                       answers.loose[i], tasks[i].spans))
        if label in holders:
            result.combined.add(i)
        else:
            holders[label] = i
            result.partials[i] = answers.partials[label]


def _first_refused(answers: _Gathered, label: int) -> int:
    return min(i for i in answers.refused if answers.labels[i] == label)
