"""The OST part of the demo: every path's results agree with a plain read."""

from __future__ import annotations

from activezarr.commands.demo import make_datasets
from activezarr.ost.demo import LAYOUTS, ost_files


def test_the_ost_demo_part_agrees_with_plain_reads_on_every_layout(tmp_path):
    rows = list(ost_files(make_datasets(tmp_path, "small")))
    assert len({r.dataset for r in rows}) == len(LAYOUTS)
    assert all(r.agree for r in rows)
    assert any("chunks on the OSS" in r.dataset for r in rows)
    assert all(r.active_bytes < r.plain_bytes / 10 for r in rows if r.reduction == "mean")
