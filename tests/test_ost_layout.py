"""``activezarr layout``: where chunks sit on the stripes and what each path would move."""

from __future__ import annotations

import numpy as np
import zarr
from click.testing import CliRunner

import activezarr
from activezarr.ost.client.survey import survey_url
from activezarr.ost.layout import layout
from ost_cluster import write_array

DATA = np.random.default_rng(5).normal(size=(64, 96)).astype("<f4")


def _group(cluster, name: str) -> str:
    url = f"{cluster.url}/layout/{name}"
    zarr.open_group(activezarr.ActiveStore.from_url(url), mode="w")
    return url


def test_the_table_shows_each_kind_of_chunk_and_its_path(ost_cluster):
    url = _group(ost_cluster, "table")
    write_array(f"{url}/raw", DATA, chunks=(32, 32), compressors=None)
    write_array(f"{url}/packed", DATA, chunks=(32, 32),
                compressors=zarr.codecs.GzipCodec())
    result = CliRunner().invoke(layout, [url])
    assert result.exit_code == 0, result.output
    rows = [line.split("│")[1:3] for line in result.output.splitlines() if "│" in line]
    assert {(kind.strip(), path.strip()) for kind, path in rows} == {
        ("uncompressed", "ost"), ("spread", "oss")}
    assert "stripe size putting every compressed chunk on one OST: 65536 bytes" in result.output


def test_the_client_policy_moves_spread_chunks_over_the_lan(ost_cluster):
    url = _group(ost_cluster, "policy")
    write_array(f"{url}/packed", DATA, chunks=(32, 32),
                compressors=zarr.codecs.GzipCodec())
    [survey] = survey_url(url, spread="client")
    [cost] = [c for (kind, path), c in survey.costs().items() if path == "client"]
    assert cost.lan == cost.disk and cost.storage == 0


def test_the_suggested_stripe_size_makes_every_compressed_chunk_single_ost(ost_cluster):
    url = _group(ost_cluster, "suggest")
    shards = {"chunks": (16, 32), "shards": (64, 96), "compressors": zarr.codecs.GzipCodec()}
    write_array(f"{url}/before", DATA, **shards)
    [before] = survey_url(url)
    stripe = before.single_ost_stripe()
    assert before.paths()["oss"] > 0
    write_array(f"{url}/after", DATA, storage_options={"stripe_size": stripe},
                **shards)
    [after] = survey_url(f"{url}/after")
    assert after.paths() == {"ost": 12}
    assert {kind for kind, _ in after.costs()} == {"single-ost"}
