"""Requests refused early (oversized bodies and URLs, before auth or any route), and API
keys never written to logs, whatever the request does with them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from query_api.app import create_app
from query_api.service import ReadModel
from stockcdc.settings import Settings
from tests.unit.query_api.conftest import auth


@pytest.fixture
def small(api_settings: Settings, pool: ReadModel) -> Iterator[TestClient]:
    settings = api_settings.model_copy(
        update={"api_max_body_bytes": 1000, "api_max_url_chars": 300}
    )
    with TestClient(create_app(settings, pool)) as c:
        yield c


def test_an_oversized_body_is_refused_before_auth(small: TestClient, keys: dict[str, str]) -> None:
    big = {"sql": "SELECT 1 -- " + "x" * 5000}
    for headers in ({}, auth(keys["bi"])):  # no key at all: still 413, not 401
        r = small.post("/v1/sql", json=big, headers=headers)
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "too_large"


def test_a_body_without_content_length_is_cut_off_at_the_limit(
    small: TestClient, keys: dict[str, str]
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"sql": "SELECT 1 -- '
        for _ in range(50):
            yield b"y" * 100
        yield b'"}'

    r = small.post(
        "/v1/sql",
        content=chunks(),
        headers={**auth(keys["bi"]), "content-type": "application/json"},
    )
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "too_large"


def test_a_long_url_is_refused(small: TestClient, keys: dict[str, str]) -> None:
    r = small.get("/v1/stock", params={"owner": "x" * 400}, headers=auth(keys["oms"]))
    assert r.status_code == 414
    assert r.json()["error"] == "uri_too_long"


def test_malformed_requests_are_4xx(small: TestClient, keys: dict[str, str]) -> None:
    bi = auth(keys["bi"])
    r = small.post(
        "/v1/sql", content=b"{not json", headers={**bi, "content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500, r.text
    assert "error" in r.json()
    r = small.post("/v1/sql", headers={**bi, "content-length": "abc"}, content=b"")
    assert r.status_code in (400, 413), r.text


def test_keys_never_appear_in_logs(
    api: TestClient,
    keys: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sck_" + "z" * 40
    for key in (*keys.values(), wrong):
        api.get("/v1/stock", params={"owner": "SELLER-A"}, headers=auth(key))
        api.get("/v1/freshness", headers=auth(key))
        api.post("/v1/sql", json={"sql": "SELECT 1"}, headers=auth(key))
        api.get("/v1/stock", params={"owner": "SELLER-A", "limit": "-1"}, headers=auth(key))
    out = capsys.readouterr()
    logged = caplog.text + out.out + out.err
    for key in (*keys.values(), wrong):
        assert key not in logged
