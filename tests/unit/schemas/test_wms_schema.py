"""The WMS DDL the project installs is the shared spec, byte for byte."""

from pathlib import Path

from schemas import WMS_SCHEMA_SQL

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "wms" / "schema.sql"


def test_wms_schema_is_identical_to_the_shared_spec() -> None:
    assert SHARED.exists(), f"the shared spec is expected beside the repo at {SHARED}"
    assert SHARED.read_text() == WMS_SCHEMA_SQL
