"""What an active server needs to read an s3fs filesystem's objects: endpoint and credentials.

Credentials are resolved as s3fs resolves them (explicit key/secret/token, else the botocore
session's chain: environment, profile, config), so that what the client could read, the server
reads too. The protocol carries them as HTTP Basic auth, which has no room for a session token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from ..errors import CredentialsError


@dataclass(frozen=True)
class S3Access:
    """The endpoint objects are named under, and the headers that carry the credentials."""

    endpoint: str
    headers: Mapping[str, str] = field(repr=False)

    def url(self, path: str) -> str:
        """Path-style URL of ``bucket/key`` (as s3fs names it, without ``s3://``)."""
        return f"{self.endpoint}/{quote(path.lstrip('/'))}"


async def s3_access(fs: Any) -> S3Access:
    """Endpoint and Basic-auth header for the s3fs filesystem ``fs`` (its session is opened)."""
    client = await fs.set_session()
    client_kwargs = getattr(fs, "client_kwargs", None) or {}
    endpoint = (getattr(fs, "endpoint_url", None) or client_kwargs.get("endpoint_url")
                or client.meta.endpoint_url)
    return S3Access(str(endpoint).rstrip("/"), await _auth_headers(fs, client_kwargs))


async def _auth_headers(fs: Any, client_kwargs: Mapping[str, Any]) -> dict[str, str]:
    if getattr(fs, "anon", False):
        return {}
    key = getattr(fs, "key", None) or client_kwargs.get("aws_access_key_id")
    secret = getattr(fs, "secret", None) or client_kwargs.get("aws_secret_access_key")
    token = getattr(fs, "token", None) or client_kwargs.get("aws_session_token")
    if not (key and secret):
        credentials = await fs.session.get_credentials()
        if credentials is None:
            return {}  # none anywhere: the server reads anonymously, as s3fs would try
        frozen = await credentials.get_frozen_credentials()
        key, secret, token = frozen.access_key, frozen.secret_key, frozen.token
    if token:
        raise CredentialsError(
            "the S3 credentials include a session token, which the active server's HTTP "
            "Basic auth cannot carry; use long-term keys for the active server, or "
            "active={'backend': 'client'} to read on the client")
    return {"Authorization": aiohttp.encode_basic_auth(key, secret)}
