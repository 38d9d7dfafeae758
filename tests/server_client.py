"""Talking to the active server as a Reductionist client does: POST JSON, read CBOR or JSON
errors."""

from __future__ import annotations

import json
from typing import Any

import cbor2
import numpy as np
import requests

from s3_servers import KEY, SECRET, ActiveServer


def post(server: ActiveServer, op: str, body: Any, *, auth: Any = "s3",
         raw: bytes | None = None) -> requests.Response:
    """POST a chunk request; ``auth="s3"`` sends the test S3 credentials as Basic auth."""
    credentials = (KEY, SECRET) if auth == "s3" else auth
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(f"{server.url}/v2/{op}", data=data, auth=credentials,
                         headers={"Content-Type": "application/json"}, timeout=30)


def ok(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/cbor"
    return cbor2.loads(response.content)


def error(response: requests.Response, status: int) -> str:
    """The error message, after checking the status and PROTOCOL.md's JSON error body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["caused_by"], list)
    return body["error"]["message"]


def values(result: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(result["dtype"]).newbyteorder("<" if result["byte_order"] == "little"
                                                   else ">")
    return np.frombuffer(result["bytes"], dtype).reshape(result["shape"])
