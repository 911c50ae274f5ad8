"""A regional cluster of the tests' own (own state dir, port and region, never the dev
clusters): where its log goes, how a failed start reads, what its pg_hba admits, and
the replica identity an older cluster gets at the next bootstrap."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from infra.errors import InfraError
from infra.postgres import PG_BIN, Cluster, remove_cluster_dirs
from schemas.wms_model import FULL_BEFORE_TABLES
from stockcdc.settings import LocalInfraSettings, Settings
from tests.integration.infra.test_replica_identity import EXPECTED, replica_identities

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_ports(count: int, start: int = 27400) -> int:
    """First of `count` consecutive free loopback ports from `start` (a region's port is
    `pg_base_port + index`)."""
    for base in range(start, start + 500):
        socks = [socket.socket() for _ in range(count)]
        try:
            for i, s in enumerate(socks):
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} free consecutive ports from {start}")


@dataclass(frozen=True)
class OwnClusters:
    settings: Settings
    cluster: Cluster  # started and bootstrapped
    spare: Cluster  # never started by the fixture


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnClusters]:
    """Two regions in a state dir only its owner may enter (mode 0700, like /root): the
    first started and bootstrapped, the second left for a test to start."""
    top = tmp_path_factory.mktemp("own-cluster")
    top.chmod(0o700)
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        state_dir=top / "state",
        regions=(f"t-{suffix}", f"t-{suffix}-spare"),
        infra=LocalInfraSettings(pg_base_port=_free_ports(2)),
    )
    cluster, spare = (Cluster(settings, r) for r in settings.region_list())
    try:
        cluster.start()
        cluster.bootstrap()
        yield OwnClusters(settings, cluster, spare)
    finally:
        cluster.stop()
        spare.stop()
        remove_cluster_dirs(settings)


def _require_root() -> None:
    """The case under test (the server's user cannot enter the state dir) needs root."""
    if os.geteuid() == 0:
        return
    msg = "needs root: the server then runs as `postgres`, which cannot enter the state dir"
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI runs as root)")
    pytest.skip(msg)


def test_as_root_the_log_stays_under_a_state_dir_the_server_user_cannot_enter(
    own: OwnClusters,
) -> None:
    _require_root()
    cluster, settings = own.cluster, own.settings
    # The case itself: `postgres` cannot traverse the state dir, so the data dir moved.
    assert not cluster.data_dir.is_relative_to(settings.state_path)
    with psycopg.connect(settings.pg_dsn(cluster.region, "app")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    log = settings.state_path / "logs" / f"postgres-{cluster.region.name}.log"
    assert cluster.log_file == log
    assert "database system is ready to accept connections" in log.read_text()


def test_a_start_that_fails_says_why_from_the_log(own: OwnClusters) -> None:
    spare = own.spare
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", spare.region.pg_port))
        squatter.listen()
        with pytest.raises(InfraError) as failed:
            spare.start()
    message = str(failed.value)
    assert str(spare.log_file) in message
    assert "could not bind" in message
    assert "Address already in use" in message


def _basebackup(
    settings: Settings, cluster: Cluster, target: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(PG_BIN / "pg_basebackup"),
            f"--host={settings.infra.pg_host}",
            f"--port={cluster.region.pg_port}",
            f"--username={settings.pg_cdc_user}",
            f"--pgdata={target}",
            "--no-password",
            "--checkpoint=fast",
        ],
        env={**os.environ, "PGPASSWORD": settings.pg_cdc_password.get_secret_value()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_no_physical_but_logical_replication(
    settings: Settings, cluster: Cluster, target: Path
) -> None:
    backup = _basebackup(settings, cluster, target)
    assert backup.returncode != 0, "pg_basebackup copied the whole cluster as the CDC role"
    assert "no pg_hba.conf entry for replication connection" in backup.stderr, backup.stderr
    # Debezium's kind of connection: logical replication on the WMS database.
    dsn = settings.pg_dsn(cluster.region, "cdc") + " replication=database"
    with psycopg.connect(dsn, autocommit=True) as conn:
        system = conn.execute("IDENTIFY_SYSTEM").fetchone()
        assert system is not None
        assert system[3] == settings.pg_database
        slot = conn.execute("CREATE_REPLICATION_SLOT t_probe TEMPORARY LOGICAL pgoutput").fetchone()
        assert slot is not None
        assert slot[0] == "t_probe"


def test_the_cdc_role_replicates_logically_but_cannot_copy_the_cluster(
    own: OwnClusters, tmp_path: Path
) -> None:
    _assert_no_physical_but_logical_replication(own.settings, own.cluster, tmp_path / "copy")


def test_a_start_drops_the_physical_replication_line_of_an_older_cluster(
    own: OwnClusters, tmp_path: Path
) -> None:
    """Clusters made before carry `host replication <cdc>`; the next start removes it."""
    settings, cluster = own.settings, own.cluster
    cluster.stop()
    hba = cluster.data_dir / "pg_hba.conf"
    with hba.open("a") as f:
        f.write(
            f"host replication {settings.pg_cdc_user} {settings.infra.pg_host}/32 scram-sha-256\n"
        )
    cluster.start()
    _assert_no_physical_but_logical_replication(settings, cluster, tmp_path / "copy")


def test_bootstrap_gives_a_cluster_made_before_the_replica_identity_it_needs(
    own: OwnClusters,
) -> None:
    """A fresh cluster has it with its schema; one bootstrapped by an older version (its
    tables still DEFAULT) gets it at the next `infra up`, which bootstraps every cluster."""
    settings, cluster = own.settings, own.cluster
    with psycopg.connect(settings.pg_dsn(cluster.region), autocommit=True) as conn:
        assert replica_identities(conn) == EXPECTED
        for table in FULL_BEFORE_TABLES:  # as an older version left them
            conn.execute(
                sql.SQL("ALTER TABLE {} REPLICA IDENTITY DEFAULT").format(
                    sql.Identifier("public", table)
                )
            )
        assert set(replica_identities(conn).values()) == {"d"}
    cluster.bootstrap()
    cluster.bootstrap()  # and again: idempotent
    with psycopg.connect(settings.pg_dsn(cluster.region)) as conn:
        assert replica_identities(conn) == EXPECTED


def test_a_non_durable_cluster_flushes_async_commits_for_decoding_within_10_ms(
    own: OwnClusters,
) -> None:
    """Logical decoding sends only flushed WAL: with `synchronous_commit = off` (no
    `pg_durable`) the WAL writer's 200 ms default was most of the commit → Kafka delay."""
    with psycopg.connect(own.settings.pg_dsn(own.cluster.region)) as conn:
        found: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings"
                " WHERE name IN ('synchronous_commit', 'wal_writer_delay')"
            ).fetchall()
        )
    assert found == {"synchronous_commit": "off", "wal_writer_delay": "10"}
