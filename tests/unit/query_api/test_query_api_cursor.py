"""Validly signed cursors whose payload is not what the list expects (not JSON, not an
object, a position of the wrong length or types, another list's kind): a 400
`bad_cursor`, never a 500. Such cursors are signed with the right secret (the dev
default, or a cursor issued by an older version), so the MAC check alone cannot stop them."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
import pytest
from fastapi.testclient import TestClient

from stockcdc.settings import Settings

_TS = "2026-02-01T00:00:00Z"


def signed(settings: Settings, payload: bytes) -> str:
    """A cursor with `payload` and a valid MAC (the format query_api.cursor documents)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    secret = settings.api_cursor_secret.get_secret_value().encode()
    mac = hmac.new(secret, payload, hashlib.sha256).digest()[:16]
    return f"{b64(payload)}.{b64(mac)}"


def position(kind: str, filters: list[str], p: object) -> bytes:
    return orjson.dumps({"k": kind, "f": filters, "p": p})


_STOCK = ["", "", ""]
_MOVES = ["", "", "", "", ""]

_BAD: list[tuple[str, bytes]] = [
    # payloads that are not a cursor object at all
    *((url, payload) for url in ("/v1/stock", "/v1/movements") for payload in (
        b"not json", b"\xff\xfe", b"[1, 2, 3]", b"null", b'"stock"', b"42", b"{}",
    )),
    # the right list, a position of the wrong shape
    *(("/v1/stock", position("stock", _STOCK, p)) for p in (
        None, "SELLER-A", {"o": "SELLER-A"}, [], ["SELLER-A", "WH-E1"],
        ["SELLER-A", "WH-E1", "SKU-1", "x"], ["SELLER-A", "WH-E1", 1],
        ["SELLER-A", None, "SKU-1"], [True, "WH-E1", "SKU-1"], [["SELLER-A"], "WH-E1", "SKU-1"],
    )),
    *(("/v1/movements", position("movements", _MOVES, p)) for p in (
        None, [], [_TS, "qa-east"], [_TS, "qa-east", 1, 2], [1, "qa-east", 1],
        ["yesterday", "qa-east", 1], ["2026-02-01T00:00:00", "qa-east", 1],  # no offset
        [_TS, 7, 1], [_TS, None, 1], [_TS, "qa-east", "1"], [_TS, "qa-east", 1.5],
        [_TS, "qa-east", True], [_TS, "qa-east", None], [_TS, "qa-east", 2**63],
        ["0001-01-01T00:00:00Z", "qa-east", 1],
        ["9999-12-31T23:59:59Z", "qa-east", 1],
    )),
    ("/v1/movements", b'{"k":"movements","f":["","","","",""],'
                      b'"p":["2026-02-01T00:00:00Z","qa-east",18446744073709551616]}'),
    # another list's kind or filters, an unknown kind
    ("/v1/stock", position("movements", _MOVES, [_TS, "qa-east", 1])),
    ("/v1/movements", position("stock", _STOCK, ["SELLER-A", "WH-E1", "SKU-1"])),
    ("/v1/stock", position("nope", _STOCK, ["SELLER-A", "WH-E1", "SKU-1"])),
    ("/v1/stock", orjson.dumps({"k": ["stock"], "f": _STOCK, "p": ["a", "b", "c"]})),
    ("/v1/stock", orjson.dumps({"k": "stock", "f": None, "p": ["a", "b", "c"]})),
]  # fmt: skip


@pytest.mark.parametrize(("url", "payload"), _BAD, ids=lambda v: repr(v)[:60])
def test_a_signed_cursor_with_a_bad_payload_is_400(
    api: TestClient, api_settings: Settings, url: str, payload: bytes
) -> None:
    r = api.get(url, params={"cursor": signed(api_settings, payload)})
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "bad_cursor", "detail": r.json()["detail"]}


def test_the_crafted_cursors_are_signed_as_the_api_signs(
    api: TestClient, api_settings: Settings
) -> None:
    """The cursors above fail on their payload, not their MAC: the API's own cursor is
    what `signed` makes of its payload, and well-formed crafted cursors are accepted."""
    issued = api.get("/v1/stock", params={"limit": 1}).json()["next_cursor"]
    body = issued.split(".")[0]
    assert signed(api_settings, base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == issued
    for url, payload in (
        ("/v1/stock", position("stock", _STOCK, ["SELLER-A", "WH-E1", "SKU-1"])),
        ("/v1/movements", position("movements", _MOVES, [_TS, "qa-east", 1])),
    ):
        r = api.get(url, params={"cursor": signed(api_settings, payload)})
        assert r.status_code == 200, r.text
