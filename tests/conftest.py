"""Shared fixtures: where the real netCDF test files are, copied before anything writes."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Fixtures of the real servers, shared by every test module (each starts on first use).
from netcdf_objects import netcdf_refs  # noqa: F401
from runners import RUNNERS, Runner
from s3_servers import active_server, moto_s3, served_root  # noqa: F401

# The ost wing's cluster, where the wing is installed (test_wing.py runs the other backends'
# tests on a copy of the package without it).
if importlib.util.find_spec("activezarr.ost"):
    from ost_cluster import fresh_cluster, ost_cluster  # noqa: F401

# HYPOTHESIS_PROFILE=thorough runs the property tests twenty times longer.
settings.register_profile("default", max_examples=250)
settings.register_profile("thorough", max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

@pytest.fixture(scope="module")
def runners(request: pytest.FixtureRequest) -> list[tuple[Runner, dict[str, Any]]]:
    """Every backend's runner with the servers it needs, started once (runners.RUNNERS)."""
    return [(r, {f: request.getfixturevalue(f) for f in r.fixtures}) for r in RUNNERS]


NETCDF_DATA = Path(__file__).resolve().parent / "data" / "netcdf"


@pytest.fixture(scope="session")
def netcdf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of tests/data/netcdf (tests may write kerchunk references beside it)."""
    target = tmp_path_factory.mktemp("netcdf")
    for path in NETCDF_DATA.glob("*.nc"):
        shutil.copy(path, target / path.name)
    return target
