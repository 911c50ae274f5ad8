"""Pagination cursors: opaque, tamper-evident keyset positions.

A cursor is `base64url(JSON payload) "." base64url(HMAC-SHA256(secret, payload)[:16])`.
The payload holds the list's kind, a fingerprint of its filters (a cursor only continues
the query it came from) and the sort key of the last row returned. Keyset positions over
stable, unique sort keys keep pages stable while rows change between requests: a row
never appears twice and no row that existed throughout is skipped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import orjson

from query_api.errors import bad_request

_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Signs and checks cursors with the secret from settings."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the cursor secret must not be empty")
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, kind: str, filters: Sequence[Any], position: Sequence[Any]) -> str:
        payload = orjson.dumps({"k": kind, "f": list(filters), "p": list(position)})
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, cursor: str, kind: str, filters: Sequence[Any]) -> list[Any]:
        """The position of a cursor this API issued for the same list and filters, or a
        400 `bad_cursor`."""
        body, sep, mac = cursor.partition(".")
        try:
            if not sep or len(cursor) > 4096:
                raise ValueError
            payload = _unb64(body)
            ok = hmac.compare_digest(self._mac(payload), _unb64(mac))
        except (ValueError, binascii.Error):
            raise bad_request("bad_cursor", "the cursor is malformed") from None
        if not ok:
            raise bad_request("bad_cursor", "the cursor was not issued by this API")
        data = orjson.loads(payload)
        if data.get("k") != kind or data.get("f") != list(filters):
            raise bad_request("bad_cursor", "the cursor belongs to another list or other filters")
        position = data.get("p")
        if not isinstance(position, list):
            raise bad_request("bad_cursor", "the cursor is malformed")
        return position
