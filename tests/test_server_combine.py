"""The batch extensions ``combine``, ``lean`` and ``absent`` on the real server, hostile input
included: each field validated, a bad item failing alone, "no such key" only where S3 says so."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from s3_servers import S3, ActiveServer
from server_client import error, ok, post

BUCKET = "combine"


def _objects(moto_s3: S3, n: int) -> list[dict[str, Any]]:
    moto_s3.bucket(BUCKET)
    items = []
    for i in range(n):
        data = np.arange(12, dtype="<f4").reshape(3, 4) + 100 * i
        moto_s3.client.put_object(Bucket=BUCKET, Key=f"c{i}", Body=data.tobytes())
        items.append({"op": "stats", "interface_type": "s3", "dtype": "float32",
                      "url": f"{moto_s3.endpoint}/{BUCKET}/c{i}", "shape": [3, 4],
                      "axis": [0], "accumulate": "wide"})
    return items


def test_items_sharing_a_label_answer_once_merged(moto_s3: S3,
                                                  active_server: ActiveServer) -> None:
    items = _objects(moto_s3, 3)
    answers = ok(post(active_server, "batch", {"requests": items, "combine": [7, 7, 7],
                                               "lean": True}))
    held, *others = answers
    assert others == [{"combined": 0, "stored_bytes": 48}] * 2
    assert held["count"] == [] and held["count_constant"] == 9 and held["stored_bytes"] == 48
    stacked = np.concatenate([np.arange(12, dtype="f4").reshape(3, 4) + 100 * i
                              for i in range(3)])
    np.testing.assert_array_equal(np.frombuffer(held["sum"], "<f8"), stacked.sum(axis=0))
    np.testing.assert_array_equal(np.frombuffer(held["max"], "<f4"), stacked.max(axis=0))


def test_an_item_that_cannot_join_its_group_fails_alone(moto_s3: S3,
                                                        active_server: ActiveServer) -> None:
    items = _objects(moto_s3, 3)
    items[2] = {**items[2], "op": "sum"}
    items.append({**items[0], "url": f"{moto_s3.endpoint}/{BUCKET}/missing"})
    answers = ok(post(active_server, "batch", {"requests": items, "combine": [1, 1, 1, 1]}))
    assert answers[1] == {"combined": 0}
    assert answers[2]["status"] == 400 and "cannot combine" in answers[2]["error"]["message"]
    assert answers[3]["status"] == 400  # without "absent", a missing key stays an error
    assert "count_constant" not in answers[0]  # not lean: Reductionist's count list
    assert answers[0]["count"] == [6] * 4


def test_absent_answers_only_the_stores_own_no_such_key(moto_s3: S3,
                                                        active_server: ActiveServer) -> None:
    [item] = _objects(moto_s3, 1)
    missing_key = {**item, "url": f"{moto_s3.endpoint}/{BUCKET}/never-written"}
    missing_bucket = {**item, "url": f"{moto_s3.endpoint}/no-such-bucket/c0"}
    answers = ok(post(active_server, "batch", {"requests": [missing_key, missing_bucket, item],
                                               "absent": True, "lean": True}))
    assert answers[0] == {"absent": True}
    assert answers[1]["status"] == 400 and "not found" in answers[1]["error"]["message"]
    assert answers[2]["stored_bytes"] == 48


@pytest.mark.parametrize("extra, message", [
    ({"combine": [1]}, "combine has 1 labels for 2 requests"),
    ({"combine": ["a", "b"]}, "combine"),
    ({"combine": [2**70, 1]}, "combine"),
    ({"lean": "yes"}, "lean"),
    ({"absent": 1}, "absent"),
])
def test_bad_batch_fields_are_400s(moto_s3: S3, active_server: ActiveServer,
                                   extra: dict[str, Any], message: str) -> None:
    items = _objects(moto_s3, 2)
    assert message in error(post(active_server, "batch", {"requests": items, **extra}), 400)
