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
from typing import Any, TypeGuard

import orjson

from query_api.errors import bad_request

_MAC_BYTES = 16
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


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

    def decode(
        self, cursor: str, kind: str, filters: Sequence[Any], shape: Sequence[type]
    ) -> list[Any]:
        """The position of a cursor this API issued for the same list and filters, or a
        400 `bad_cursor`. The position is checked against `shape`, the type of each
        element of the list's sort key (`int`: one that fits ClickHouse's Int64): a
        correctly signed payload of another form (the secret leaked or shared, a cursor of
        an older version) must not reach a query."""
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
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise bad_request("bad_cursor", "the cursor is malformed") from None
        if not isinstance(data, dict):
            raise bad_request("bad_cursor", "the cursor is malformed")
        if data.get("k") != kind or data.get("f") != list(filters):
            raise bad_request("bad_cursor", "the cursor belongs to another list or other filters")
        position = data.get("p")
        if not _fits(position, shape):
            raise bad_request("bad_cursor", "the cursor is malformed")
        return position


def _fits(position: object, shape: Sequence[type]) -> TypeGuard[list[Any]]:
    """`position` is a list of exactly `shape`'s types."""
    return (
        isinstance(position, list)
        and len(position) == len(shape)
        and all(_is(v, t) for v, t in zip(position, shape, strict=True))
    )


def _is(value: Any, kind: type) -> bool:
    """`value` is of type `kind` itself (JSON `true` is no int); an int fits Int64."""
    if type(value) is not kind:
        return False
    return not isinstance(value, int) or _INT64_MIN <= value <= _INT64_MAX
