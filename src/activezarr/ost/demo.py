"""The OST part of ``activezarr demo``: the sample dataset on a small striped cluster.

The same data is written three ways, so that each active path shows up: uncompressed chunks
spread over the OSTs (reduced as part chunks), zstd chunks inside one OST's stripe (reduced on
that OST), and zstd chunks cut by small stripes (reduced on the OSS).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from ..client.store import ActiveStore
from ..commands.demo import Datasets, Row, compare
from .client.survey import survey_array
from .servers.cluster import Cluster, ClusterConfig

KiB = 1024
#: Where a chunk of the ost backend is reduced, by the survey's name for its path.
PLACES = {"ost": "OSTs", "oss": "OSS", "client": "client"}
#: (label, compressed, stripe size) of each copy of the sample dataset.
LAYOUTS = [
    ("uncompressed, 64 KiB stripes", False, 64 * KiB),
    ("zstd, 1 MiB stripes", True, 1024 * KiB),
    ("zstd, 16 KiB stripes", True, 16 * KiB),
]


def ost_files(data: Datasets) -> Iterator[Row]:
    """A four-OST striped file system on loopback.

    Parallel file system (ost backend): tas written three ways onto a four-OST striped file
    system on loopback. 'N chunks on the OSTs' means the OST holding each chunk's bytes reduced
    it; 'on the OSS' means the OSS gathered a chunk cut by small stripes from several OSTs over
    the storage network and reduced it there; 'on the client' means it was read plainly.
    """
    source = zarr.open_array(LocalStore(data.paths["tas"], read_only=True), mode="r")
    values = np.asarray(source[...])
    dimension_names = getattr(source.metadata, "dimension_names", None)  # zarr v3 only
    root = data.paths["tas"].parent / "ost-cluster"
    with Cluster(ClusterConfig(root=root, osts=4)) as cluster:
        for i, (label, compressed, stripe) in enumerate(LAYOUTS):
            url = f"{cluster.url}/tas{i}.zarr"
            zarr.create_array(
                ActiveStore.from_url(url, storage_options={"stripe_size": stripe}), data=values,
                chunks=source.chunks, fill_value=source.fill_value,
                compressors=zarr.codecs.ZstdCodec() if compressed else None,
                attributes=source.attrs.asdict(), dimension_names=dimension_names,
            )
            active = zarr.open_array(ActiveStore.from_url(url, read_only=True), mode="r")
            paths = ", ".join(f"{n} chunks on the {PLACES[p]}"
                              for p, n in sorted(survey_array(active).paths().items()))
            yield from compare(f"tas, {label}: {paths}", active,
                               FsspecStore.from_url(url, read_only=True))
