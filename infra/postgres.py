"""The regional WMS PostgreSQL 15 clusters: one local cluster per region, own port.

Each cluster gets `wal_level=logical`, a bounded slot WAL retention, the WMS schema
(schemas/wms/schema.sql, loaded as the admin role) with REPLICA IDENTITY FULL on the
tables whose old rows the projection needs, a filtered publication of the WMS
tables for Debezium, and two roles: a CDC role (REPLICATION + SELECT, nothing else) and a
workload role for the simulator (DML only). Only the CDC role may write logical-decoding
messages (its heartbeat WAL marks), and pg_hba admits no physical replication: the CDC
role's logical replication connections match `all` like any other. Everything is
idempotent.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psycopg
from psycopg import sql

from infra.errors import InfraError
from infra.jvm import tail
from schemas import WMS_SCHEMA_SQL
from schemas.wms_model import FULL_BEFORE_TABLES
from stockcdc.settings import WMS_TABLES, Region, Settings

PG_MAJOR = 15
PG_BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
PUBLICATION = "dbz_wms"


def ensure_server_binaries() -> Path:
    """Return the PostgreSQL 15 bin dir, installing Debian's package when running as root."""
    if (PG_BIN / "initdb").exists():
        return PG_BIN
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", f"postgresql-{PG_MAJOR}"]
    if os.geteuid() != 0:
        raise InfraError(
            f"PostgreSQL {PG_MAJOR} server binaries are missing ({PG_BIN}/initdb). "
            f"Install them with: sudo apt-get update && sudo {' '.join(cmd)}"
        )
    subprocess.run(["apt-get", "update", "-q"], check=True)
    subprocess.run(cmd, check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not (PG_BIN / "initdb").exists():
        raise InfraError(f"installed postgresql-{PG_MAJOR} but {PG_BIN}/initdb is still missing")
    return PG_BIN


@dataclass(frozen=True)
class Cluster:
    """Paths and commands of one region's cluster."""

    settings: Settings
    region: Region

    @property
    def data_dir(self) -> Path:
        return pg_root(self.settings.state_path) / self.region.name

    @property
    def log_file(self) -> Path:
        return self.settings.state_path / "logs" / f"postgres-{self.region.name}.log"

    # PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user.
    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def _chown_for_server(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def pid(self) -> int | None:
        """Postmaster pid if the cluster is running, else None."""
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def init(self) -> None:
        """initdb once, with the admin role as bootstrap superuser and our settings."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        bin_dir = ensure_server_binaries()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._chown_for_server(self.data_dir.parent)
        self.data_dir.parent.chmod(0o755)
        with tempfile.NamedTemporaryFile("w", delete=False, prefix="pwfile") as pwfile:
            pwfile.write(self.settings.pg_admin_password.get_secret_value())
        pw_path = Path(pwfile.name)
        self._chown_for_server(pw_path)
        try:
            subprocess.run(
                self._as_server_user(
                    [
                        str(bin_dir / "initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        self.settings.pg_admin_user,
                        f"--pwfile={pw_path}",
                        "--auth=scram-sha-256",
                        "--encoding=UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                check=True,
                capture_output=True,
                text=True,
            )
        except subprocess.CalledProcessError as exc:
            raise InfraError(f"initdb for {self.region.name} failed:\n{exc.stderr}") from exc
        finally:
            pw_path.unlink(missing_ok=True)
        self._write_config()

    def _write_config(self) -> None:
        s = self.settings
        durable = "on" if s.infra.pg_durable else "off"
        conf = f"""
# --- stockcdc: regional WMS cluster {self.region.name} ---
listen_addresses = '{s.infra.pg_host}'
port = {self.region.pg_port}
unix_socket_directories = ''
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
max_slot_wal_keep_size = '{s.infra.pg_max_slot_wal_keep_size}'
max_connections = 100
shared_buffers = '256MB'
fsync = {durable}
full_page_writes = {durable}
synchronous_commit = {durable}
logging_collector = off
log_min_messages = warning
"""
        with (self.data_dir / "postgresql.conf").open("a") as f:
            f.write(conf)

    def _async_commit_flush(self) -> str:
        """Without `pg_durable` a commit returns before its WAL is flushed, and logical
        decoding sends only flushed WAL: the WAL writer's flush, every 200 ms by default,
        was half of the commit → API delay (Debezium's records reached Kafka 205 ms after
        their commit at p50). A durable WMS flushes at commit; this flushes within 10 ms."""
        return "" if self.settings.infra.pg_durable else " -c wal_writer_delay=10ms"

    def _write_hba(self) -> None:
        """pg_hba.conf, rewritten at every start so a cluster made by an older version
        loses the lines it should no longer have (the server reads it at start)."""
        s = self.settings
        hba = (
            "# stockcdc: TCP on loopback only, passwords always. No `replication` line:\n"
            "# logical replication connections (Debezium's) match `all` like any other,\n"
            "# physical replication (pg_basebackup, standbys) is refused to every role.\n"
            f"host all all {s.infra.pg_host}/32 scram-sha-256\n"
        )
        (self.data_dir / "pg_hba.conf").write_text(hba)

    def start(self) -> None:
        if self.pid() is not None:
            return
        self.init()
        self._write_hba()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # This process opens the log and pg_ctl hands it to the postmaster as its stdout
        # and stderr (no `-l`, which the server user would open): as root the server user
        # may be unable to reach the state dir (a checkout under /root), and the log still
        # belongs in <state>/logs. A file, not a pipe: the postmaster keeps the descriptor
        # for its whole life, so reading a pipe to its end would wait for the server to stop.
        with self.log_file.open("ab") as log:
            result = subprocess.run(
                self._as_server_user(
                    [
                        str(PG_BIN / "pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        # The port follows the settings, whatever initdb's config says.
                        "-o",
                        f"-p {self.region.pg_port}{self._async_commit_flush()}",
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ]
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            raise InfraError(
                f"PostgreSQL {self.region.name} did not start (see {self.log_file}):\n"
                + tail(self.log_file)
            )

    def stop(self) -> None:
        if self.pid() is None:
            return
        subprocess.run(
            self._as_server_user(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]
            ),
            capture_output=True,
            check=False,
        )

    def bootstrap(self) -> None:
        """Create the database, roles, schema, grants and publication (idempotent)."""
        s = self.settings
        with psycopg.connect(
            self.settings.pg_dsn(self.region, dbname="postgres"), autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (s.pg_database,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(s.pg_database)))
            for user, password, attrs in (
                (s.pg_cdc_user, s.pg_cdc_password, "LOGIN REPLICATION"),
                (s.pg_app_user, s.pg_app_password, "LOGIN"),
            ):
                role_exists = conn.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)
                ).fetchone()
                verb = "ALTER" if role_exists else "CREATE"
                conn.execute(
                    sql.SQL("{} ROLE {} WITH " + attrs + " PASSWORD {}").format(
                        sql.SQL(verb),
                        sql.Identifier(user),
                        sql.Literal(password.get_secret_value()),
                    )
                )
        with psycopg.connect(self.settings.pg_dsn(self.region), autocommit=True) as conn:
            load_wms_schema(conn)
            set_replica_identity(conn)  # a schema loaded by an older version lacks it
            grant_roles(conn, s)
            ensure_publication(conn)


def load_wms_schema(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Install the WMS DDL, and the replica identity the projection needs, into an empty
    database; a database that has it is left alone."""
    present = conn.execute("SELECT to_regclass('public.warehouse') IS NOT NULL").fetchone()
    if present and present[0]:
        return
    with conn.transaction():
        conn.execute(WMS_SCHEMA_SQL.encode())
        set_replica_identity(conn)


def set_replica_identity(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """REPLICA IDENTITY FULL on `FULL_BEFORE_TABLES`, so that Debezium sends their updates'
    and deletes' whole old rows (the WMS schema file, an existing system's, says DEFAULT).

    Idempotent, and altering only a table not yet FULL: the ALTER takes an ACCESS
    EXCLUSIVE lock, which a running workload should not meet at every `infra up`."""
    for table in FULL_BEFORE_TABLES:
        identity = conn.execute(
            "SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (f"public.{table}",)
        ).fetchone()
        if identity != ("f",):
            conn.execute(
                sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(
                    sql.Identifier("public", table)
                )
            )


def grant_roles(
    conn: psycopg.Connection[tuple[object, ...]], s: Settings, dbname: str | None = None
) -> None:
    """CDC role: read and replicate only. Workload role: DML on the WMS tables.

    Logical-decoding messages are the CDC role's alone: PostgreSQL lets PUBLIC call
    pg_logical_emit_message, and a message with the heartbeat prefix is a WAL mark that
    consumers trust as the region's clock. Function grants live in each database's
    catalog, so this runs per database like the rest."""
    cdc, app = sql.Identifier(s.pg_cdc_user), sql.Identifier(s.pg_app_user)
    db = sql.Identifier(dbname or s.pg_database)
    for stmt in (
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        "GRANT CONNECT ON DATABASE {db} TO {cdc}, {app}",
        "GRANT USAGE ON SCHEMA public TO {cdc}, {app}",
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {cdc}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {cdc}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {cdc}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {app}",
        "REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(bool, text, text) FROM PUBLIC",
        "REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(bool, text, bytea) FROM PUBLIC",
        "GRANT EXECUTE ON FUNCTION pg_logical_emit_message(bool, text, text) TO {cdc}",
        "GRANT EXECUTE ON FUNCTION pg_logical_emit_message(bool, text, bytea) TO {cdc}",
    ):
        conn.execute(sql.SQL(stmt).format(db=db, cdc=cdc, app=app))


def ensure_publication(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """The filtered publication Debezium streams from (created here, not by the CDC role,
    which owns no table and so could not create it)."""
    exists = conn.execute(
        "SELECT 1 FROM pg_publication WHERE pubname = %s", (PUBLICATION,)
    ).fetchone()
    if exists:
        return
    tables = sql.SQL(", ").join(sql.Identifier("public", t) for t in WMS_TABLES)
    conn.execute(
        sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(PUBLICATION), tables)
    )


@cache
def pg_root(state_path: Path) -> Path:
    """Folder of the clusters' data dirs: `<state>/pg`, unless we run as root and the
    `postgres` user (the server's) cannot traverse the state dir (a checkout under /root,
    say): then a folder under /var/tmp named after the state dir."""
    default = state_path / "pg"
    if os.geteuid() != 0:
        return default
    state_path.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", str(state_path)], check=False
    )
    if probe.returncode == 0:
        return default
    digest = hashlib.sha1(str(state_path).encode(), usedforsecurity=False).hexdigest()[:12]
    return Path("/var/tmp") / f"stockcdc-pg-{digest}"  # noqa: S108 (fixed name: found again by down)


def remove_cluster_dirs(settings: Settings) -> None:
    shutil.rmtree(pg_root(settings.state_path), ignore_errors=True)
