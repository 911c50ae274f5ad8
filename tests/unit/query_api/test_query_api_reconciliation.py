"""`GET /v1/reconciliation`: the last report written by the reconciliation job, for OMS
keys only; 404 before any ran."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from query_api.app import create_app
from query_api.service import ReadModel
from read_model.reconcile import RegionReport, Report, TableDiff, write_report
from stockcdc.settings import Settings
from tests.unit.query_api.conftest import auth


def _app(settings: Settings, pool: ReadModel) -> TestClient:
    return TestClient(create_app(settings, pool))


def test_report_is_served_to_oms_keys_only(
    api_settings: Settings, pool: ReadModel, keys: dict[str, str], tmp_path: Path
) -> None:
    settings = api_settings.model_copy(update={"state_dir": tmp_path})
    with _app(settings, pool) as api:
        none_yet = api.get("/v1/reconciliation", headers=auth(keys["oms"]))
        assert none_yet.status_code == 404
        assert none_yet.json()["error"] == "not_found"

        table = TableDiff("east", "inventory", 3, 2, 11, 7)
        table._add("missing", (42,))
        region = RegionReport("east", True, cut_lsn=99, tables=[table])
        write_report(
            settings, Report("2026-11-27T10:00:00+00:00", "2026-11-27T10:00:05+00:00", [region])
        )

        got = api.get("/v1/reconciliation", headers=auth(keys["oms"]))
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["ok"] is False
        assert body["differences"] == 1
        assert body["regions"][0]["tables"][0]["missing"] == [[42]]
        assert body["regions"][0]["cut_lsn"] == 99
        for who in ("SELLER-A", "bi"):
            refused = api.get("/v1/reconciliation", headers=auth(keys[who]))
            assert refused.status_code == 403, who
        assert api.get("/v1/reconciliation").status_code == 401
        assert (
            api.get("/v1/reconciliation", params={"x": 1}, headers=auth(keys["oms"])).status_code
            == 400
        )
