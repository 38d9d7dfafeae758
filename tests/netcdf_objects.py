"""The real netCDF test files in the session's S3 (moto), with their kerchunk references.

conftest.py makes the fixture visible to every test module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from s3_servers import S3

__all__ = ["NETCDF_BUCKET", "NETCDF_FILES", "netcdf_refs"]

NETCDF_BUCKET = "netcdf-files"
#: (file name, a variable to reduce) of each vendored file in tests/data/netcdf.
NETCDF_FILES = [
    ("CMIP6-test.nc", "tas"),
    ("obs4MIPS_CERES-EBAF_L3B_Ed2-8_rlut.nc", "rlut"),
    ("test1.nc", "tas"),
    ("cesm2_native.nc", "TREFHT"),
    ("daily_data_masked.nc", "ta"),
]


@pytest.fixture(scope="session")
def netcdf_refs(netcdf_dir: Path, moto_s3: S3) -> dict[str, dict[str, Any]]:
    """File name -> kerchunk references of the file uploaded to s3://netcdf-files/ (public-read,
    for the http tests), made by kerchunk reading the object in S3."""
    kerchunk_hdf = pytest.importorskip("kerchunk.hdf")
    moto_s3.bucket(NETCDF_BUCKET)
    refs = {}
    for name, _ in NETCDF_FILES:
        moto_s3.client.upload_file(str(netcdf_dir / name), NETCDF_BUCKET, name)
        moto_s3.client.put_object_acl(Bucket=NETCDF_BUCKET, Key=name, ACL="public-read")
        refs[name] = kerchunk_hdf.SingleHdf5ToZarr(
            f"s3://{NETCDF_BUCKET}/{name}", storage_options=moto_s3.storage_options,
            inline_threshold=0).translate()
    return refs
