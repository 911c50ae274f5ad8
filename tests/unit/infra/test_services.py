"""`stockcdc infra` runs local clusters only for regions without a DSN."""

from infra.services import clusters
from stockcdc.settings import Settings


def test_a_region_with_a_dsn_gets_no_local_cluster() -> None:
    settings = Settings.model_validate({"wms": {"dsns": {"eu-central": "host=wms-euc"}}})
    assert [c.region.name for c in clusters(settings)] == ["us-west", "ap-southeast"]
    assert [c.region.pg_port for c in clusters(settings)] == [25431, 25433]
