"""Apply `schemas/clickhouse/NNN_*.sql` in order, once each, recording applied versions.

Idempotent: every statement is `IF NOT EXISTS`, a file is recorded only after all its
statements ran, and a file changed after being applied is refused (checksum).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from read_model.ddl import DDL_DIR, render
from read_model.errors import MigrationError, classify

_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS _schema_migrations {on_cluster}
(
    `version` UInt32,
    `name` String,
    `checksum` String,
    `applied_at` DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = {replicated}ReplacingMergeTree(applied_at)
ORDER BY version
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered DDL file."""

    version: int
    name: str
    path: Path

    @property
    def template(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()


def discover(directory: Path = DDL_DIR) -> list[Migration]:
    """The DDL files in version order; a misnamed or duplicate-numbered file is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILE.match(path.name)
        if m is None:
            raise MigrationError(f"DDL file not named NNN_name.sql: {path.name}")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two DDL files numbered {version}")
        found[version] = Migration(version, m.group(2), path)
    return [found[v] for v in sorted(found)]


def statements(sql: str) -> list[str]:
    """Split a DDL file into statements (`;` at a line end; no `;` inside literals)."""
    no_comments = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", no_comments, flags=re.M) if s.strip()]


def migrate(client: Client, cluster: str | None = None, directory: Path = DDL_DIR) -> list[int]:
    """Apply the DDL files not applied yet; returns the versions applied now."""
    on_cluster = f"ON CLUSTER `{cluster}`" if cluster else ""
    _run(
        client,
        _MIGRATIONS_TABLE.format(on_cluster=on_cluster, replicated="Replicated" if cluster else ""),
    )
    applied = {
        int(v): str(c)
        for v, c in client.query(
            "SELECT version, argMax(checksum, applied_at) FROM _schema_migrations GROUP BY version"
        ).result_rows
    }
    done: list[int] = []
    for mig in discover(directory):
        if mig.version in applied:
            if applied[mig.version] != mig.checksum:
                raise MigrationError(
                    f"{mig.path.name} changed after it was applied; add a new numbered file"
                )
            continue
        for stmt in statements(render(mig.template, cluster)):
            _run(client, stmt)
        client.insert(
            "_schema_migrations",
            [[mig.version, mig.name, mig.checksum]],
            column_names=["version", "name", "checksum"],
        )
        done.append(mig.version)
    return done


def _run(client: Client, stmt: str) -> None:
    try:
        client.command(stmt)
    except Exception as exc:  # driver errors have no common base; classify decides
        raise classify(exc, f"DDL {stmt[:80]!r}") from exc
