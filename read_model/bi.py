"""BI access (issue 7): the read-only ClickHouse session BI SQL runs in, the gate a
statement passes before it runs, daily stock snapshots, and server-mode access DDL.

Every refusal comes from the engine, never from matching the SQL text:
- The BI session is locked with `readonly = 1` *after* its limits are set, so the engine
  refuses writes, DDL, SET and SETTINGS clauses, and the table functions that read files
  or the network (file, url, s3, remote, postgresql, ...); `max_execution_time`,
  `max_memory_usage`, `max_result_rows`/`max_result_bytes` (overflow: throw) hold.
- Features readonly does not cover are switched off in the same session before the lock
  (`allow_python_table_function`, `allow_introspection_functions`, ...).
- chDB has no access control (one `default` user, no writable user directory), so system
  tables are refused by `additional_table_filters`: every `system.*` table (information
  schema views read them) gets a filter that throws; readonly keeps it in place.
- ClickHouse's parser gates the statement (`gate`): it must be exactly one statement
  (formatQuerySingleLine refuses a second one) that is a query expression, i.e. fits in
  `SELECT * FROM (...)` (formatQuery refuses INSERT, DDL, SET, KILL, SYSTEM, SHOW,
  `INTO OUTFILE`, `FORMAT`). Needed because chDB (clickhouse-local) writes `INTO OUTFILE`
  files client-side whatever readonly says. The engine-canonical text is what runs.
- The scalar function `file(path)` has no access control in embedded chDB: a ClickHouse
  server confines it to user_files_path, clickhouse-local skips that check and no setting
  covers it. There the gate also refuses a statement whose syntax tree, as the engine's
  own parser gives it (EXPLAIN AST), calls `file` (names are case-sensitive and only
  DDL, refused, could alias one). See README, BI access.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from read_model import queries
from read_model.client import make_client
from read_model.ddl import BI_RELATIONS, STOCK_FIGURES
from read_model.errors import ReadModelError, classify, error_code
from stockcdc.settings import Settings

#: The message of the filter that refuses system tables (recognised in engine errors).
SYSTEM_TABLES_REFUSED = "stockcdc BI: system tables are not readable by BI queries"
#: System tables left readable: `one` is the source of a SELECT without FROM.
_SYSTEM_ALLOWED = frozenset({"one"})
#: Features readonly does not forbid, switched off in the BI session (when they exist).
_FEATURES_OFF: Mapping[str, int] = {
    "allow_python_table_function": 0,  # chDB: python() reads objects of this process
    "allow_introspection_functions": 0,
    "allow_experimental_eval_table_function": 0,
    "allow_experimental_ai_functions": 0,
    "allow_experimental_ytsaurus_table_function": 0,
    "allow_ddl": 0,
}


class BiQueryError(ReadModelError):
    """A BI statement the engine refused or could not run: an HTTP status, a stable
    code and the engine's message (the caller's own SQL, safe to show them)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail


# -- the BI session --------------------------------------------------------------------


def session_settings(settings: Settings) -> dict[str, Any]:
    """Limits and output options of the BI session, in the order they are set (all
    before `readonly`, which must come last: after it nothing can be changed)."""
    return {
        "max_execution_time": settings.bi_max_execution_time_s,
        "timeout_overflow_mode": "throw",
        "max_memory_usage": settings.bi_max_memory_bytes,
        "max_result_rows": settings.bi_max_result_rows,
        "max_result_bytes": settings.bi_max_result_bytes,
        "result_overflow_mode": "throw",
        "output_format_json_quote_64bit_integers": 0,
        "output_format_json_quote_decimals": 0,
    }


def lock_down(client: Client, settings: Settings) -> None:
    """Turn `client`'s session into a BI session: limits, features off, system tables
    refused (chDB), then `readonly = 1`. chDB keeps session settings per handle, so this
    client alone is locked; an HTTP client sends them with every query."""
    known = getattr(client, "server_settings", {}) or {}
    for key, value in session_settings(settings).items():
        client.set_client_setting(key, value)
    for key, value in _FEATURES_OFF.items():
        if key in known:
            client.set_client_setting(key, value)
    if client.__class__.__name__ == "ChdbClient":
        names = client.query("SELECT name FROM system.tables WHERE database = 'system'")
        refused = {
            f"system.{n}": f"throwIf(1, '{SYSTEM_TABLES_REFUSED}')"
            for (n,) in names.result_rows
            if n not in _SYSTEM_ALLOWED
        }
        client.set_client_setting("additional_table_filters", refused)
    client.set_client_setting("readonly", 1)


def bi_url(settings: Settings, url: str | None = None) -> str:
    """Where BI SQL runs: `url`, else `bi_clickhouse_url`, else the read model's URL (for
    chDB a second handle on the same engine, with its own session)."""
    return url or settings.bi_clickhouse_url or settings.clickhouse_dsn


def open_bi_client(settings: Settings, url: str | None = None) -> Client:
    """A locked BI client on `bi_url(settings, url)`."""
    client = make_client(settings, bi_url(settings, url))
    try:
        lock_down(client, settings)
    except Exception as exc:
        client.close()
        raise classify(exc, "locking the BI session") from exc
    return client


# -- running a statement -----------------------------------------------------------------

#: Response formats → the ClickHouse output format producing them.
FORMATS: Mapping[str, str] = {
    "json": "JSONCompact",
    "csv": "CSVWithNames",
    "parquet": "Parquet",
    "arrow": "ArrowStream",
}

_SYNTAX_ERROR = 62
#: Engine error codes → (HTTP status, error code) of the BI endpoint.
_REFUSED: Mapping[int, tuple[int, str]] = {
    164: (403, "read_only"),  # READONLY: writes, DDL, settings, file/url/... functions
    497: (403, "access_denied"),  # ACCESS_DENIED: server-mode grants
    446: (403, "function_not_allowed"),  # FUNCTION_NOT_ALLOWED: features switched off
    159: (422, "time_limit_exceeded"),  # TIMEOUT_EXCEEDED
    241: (422, "memory_limit_exceeded"),  # MEMORY_LIMIT_EXCEEDED
    396: (422, "result_too_large"),  # TOO_MANY_ROWS_OR_BYTES
}
_VERSION = re.compile(r"\s*\(version [^)]*\)\.?")


def _message(exc: BaseException) -> str:
    text = str(exc)
    start = text.find("Code: ")
    text = text[start:] if start >= 0 else text
    return _VERSION.sub("", text).strip()[:2000]


def _refusal(exc: Exception, what: str) -> Exception:
    """An engine error → a `BiQueryError` (the caller's fault or a refusal); anything that
    is not the engine answering → the read model's transient/terminal error."""
    code = error_code(exc)
    if code is None:
        return classify(exc, what)
    msg = _message(exc)
    if SYSTEM_TABLES_REFUSED in msg:
        return BiQueryError(403, "system_table", SYSTEM_TABLES_REFUSED)
    status, error = _REFUSED.get(code, (400, "sql_error"))
    if code == _SYNTAX_ERROR:
        error = "sql_syntax"
    return BiQueryError(status, error, msg)


def gate(client: Client, sql: str, embedded: bool = False) -> str:
    """The engine-canonical text of `sql` if ClickHouse's parser reads it as exactly one
    query expression; raises `BiQueryError` 400 (not SQL, or several statements) or 403
    (a statement that is not a query: INSERT, DDL, SET, SHOW, KILL, INTO OUTFILE, FORMAT;
    with `embedded` chDB also one calling the scalar `file`). Only ever parses: nothing
    of `sql` is executed here."""
    try:
        canonical = str(
            client.query(
                "SELECT formatQuerySingleLine({q:String})", parameters={"q": sql}
            ).result_rows[0][0]
        )
    except Exception as exc:  # driver errors have no common base; _refusal decides
        raise _refusal(exc, "parsing BI SQL") from exc
    try:
        client.query(
            "SELECT formatQuery(concat('SELECT * FROM (', {c:String}, ')'))",
            parameters={"c": canonical},
        )
    except Exception as exc:
        err = _refusal(exc, "parsing BI SQL")
        if isinstance(err, BiQueryError) and err.error == "sql_syntax":
            raise BiQueryError(
                403,
                "not_a_query",
                "only one read query is accepted (SELECT, WITH ..., UNION, EXPLAIN); "
                "ClickHouse does not parse this statement as one: INSERT, DDL, SET, SHOW, "
                "KILL, SYSTEM, INTO OUTFILE and FORMAT are refused",
            ) from exc
        raise err from exc
    if embedded:
        _refuse_file_function(client, canonical)
    return canonical


#: A node of EXPLAIN AST's output: its depth (one space per level) and its text.
_AST_NODE = re.compile(r"^( *)(\S.*)$", re.MULTILINE)


def _calls_file(tree: str) -> bool:
    """Whether EXPLAIN AST's `tree` calls the scalar `file`: a `Function file` node not
    directly under a TableExpression (that is the table function, which readonly
    already refuses with its own error)."""
    path: list[str] = []  # the text of each ancestor of the current node
    for m in _AST_NODE.finditer(tree):
        depth, text = len(m.group(1)), m.group(2)
        del path[depth:]
        if re.match(r"Function file\b", text) and not (
            path and path[-1].startswith("TableExpression")
        ):
            return True
        path.append(text)
    return False


def _refuse_file_function(client: Client, canonical: str) -> None:
    """Raise 403 if the engine's syntax tree of `canonical` calls `file`: in embedded
    chDB it reads any file the process can (FunctionFile checks paths on a server only)."""
    try:
        tree = client.raw_query(f"EXPLAIN AST {canonical}", fmt="TSVRaw").decode()
    except Exception as exc:  # driver errors have no common base; _refusal decides
        raise _refusal(exc, "parsing BI SQL") from exc
    if _calls_file(tree):
        raise BiQueryError(
            403,
            "function_not_allowed",
            "the file() function reads the server's files: not available to BI queries"
            " on the embedded engine",
        )


def run(client: Client, sql: str, fmt: str, embedded: bool = False) -> bytes:
    """Run `sql` through `gate` on a locked BI client; the result in `FORMATS[fmt]`.
    The whole result is materialised (bounded by max_result_bytes) so a limit hit
    mid-way is an error answer, never a truncated 200."""
    canonical = gate(client, sql, embedded)
    try:
        return client.raw_query(canonical, fmt=FORMATS[fmt])
    except Exception as exc:
        raise _refusal(exc, "running BI SQL") from exc


class BiSession:
    """A locked BI client, replaced by a fresh one after any failed statement: chDB hands
    the unread output of a failed query (e.g. rows before a result limit was hit) to
    the next query on the same handle, so a handle that saw an error is never reused."""

    def __init__(self, settings: Settings, url: str | None = None) -> None:
        self._settings = settings
        self._url = url
        self._client: Client | None = open_bi_client(settings, url)
        self._embedded = bi_url(settings, url).startswith("chdb://")

    def run(self, sql: str, fmt: str) -> bytes:
        """`run` on this session's client (reopened first if the last reopen failed)."""
        if self._client is None:
            self._client = open_bi_client(self._settings, self._url)
        try:
            return run(self._client, sql, fmt, self._embedded)
        except Exception:
            self._discard()
            raise

    def _discard(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        try:
            self._client = open_bi_client(self._settings, self._url)
        except ReadModelError:
            self._client = None  # the next run tries again

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# -- daily stock snapshots ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One day's snapshot run: its cut and how many keys it stored."""

    day: date
    cut_ts: datetime
    cuts: dict[str, int]  # region → commit LSN of the last commit before cut_ts
    rows: int
    taken_at: datetime


class NotCaughtUp(ReadModelError):
    """A region's watermark has not passed the cut yet: its state there is not final."""


def end_of_day(day: date) -> datetime:
    """The (exclusive) cut of a day's snapshot: the next midnight, UTC."""
    return datetime.combine(day + timedelta(days=1), time(0), UTC)


def cut_lsns(client: Client, cut_ts: datetime) -> dict[str, int]:
    """Per region, the commit LSN of its last transaction committed before `cut_ts` and
    visible (at or below the watermark); raises `NotCaughtUp` when a region's watermark
    (commit time or heartbeat) is still before `cut_ts`."""
    marks = queries.watermarks(client)
    behind = [
        m.region
        for m in marks
        if max(m.source_commit_ts, m.heartbeat_ts or m.source_commit_ts) < cut_ts
    ]
    if behind:
        raise NotCaughtUp(f"region(s) {', '.join(sorted(behind))} not applied up to {cut_ts}")
    rows = queries._query(
        client,
        "SELECT region, max(commit_lsn) FROM _commit_log"
        " WHERE commit_ts < {cut:DateTime64(3, 'UTC')}"
        " AND commit_lsn <= mapFromArrays({wr:Array(String)}, {wl:Array(UInt64)})[region]"
        " GROUP BY region",
        {
            "cut": cut_ts,
            "wr": [m.region for m in marks],
            "wl": [m.applied_commit_lsn for m in marks],
        },
        "snapshot cut",
    )
    return {str(r): int(lsn) for r, lsn in rows}


def snapshot_stock(client: Client, day: date, cut_ts: datetime | None = None) -> Snapshot:
    """Store the stock figures of every key as of the end of `day` (or as of `cut_ts`)
    in `bi_stock_daily`: what `stock_current` serves at the last commit before the cut,
    read as `bi_stock` reads it at the watermark (migration 014). Idempotent: a new run
    of a day supersedes the previous one in `bi_stock_history`. Any day may be
    (re)filled while its `stock_current` versions (one per commit that changed a key,
    never merged away) and `_commit_log` entries exist (all are kept)."""
    cut = cut_ts or end_of_day(day)
    cuts = cut_lsns(client, cut)
    taken = datetime.now(UTC)
    cols = ", ".join(STOCK_FIGURES)
    params = {
        "day": day,
        "cut": cut,
        "taken": taken,
        "wr": list(cuts),
        "wl": list(cuts.values()),
    }
    try:
        client.command(
            f"INSERT INTO bi_stock_daily (day, region, owner, warehouse, sku, {cols},"
            " cut_ts, cut_lsn, taken_at)"
            f" SELECT {{day:Date}}, region, owner, warehouse, sku, {cols},"
            " {cut:DateTime64(3, 'UTC')},"
            " mapFromArrays({wr:Array(String)}, {wl:Array(UInt64)})[region],"
            " {taken:DateTime64(6, 'UTC')}"
            " FROM _bi_stock_at(wr = {wr:Array(String)}, wl = {wl:Array(UInt64)})",
            parameters=params,
        )
    except Exception as exc:
        raise classify(exc, f"snapshot of {day}") from exc
    n = queries._query(
        client,
        "SELECT count() FROM bi_stock_daily WHERE day = {day:Date}"
        " AND taken_at = {taken:DateTime64(6, 'UTC')}",
        {"day": day, "taken": taken},
        "snapshot count",
    )
    return Snapshot(day, cut, cuts, int(n[0][0]), taken)


def due_days(client: Client, today: date, backfill_days: int) -> list[date]:
    """Finished days (before `today`, UTC) within `backfill_days` that have commits logged
    and no snapshot yet, oldest first."""
    lo = today - timedelta(days=max(1, backfill_days))
    rows = queries._query(
        client,
        "SELECT toDate(min(commit_ts)) FROM _commit_log HAVING count() > 0",
        {},
        "commit log start",
    )
    if not rows:
        return []
    first = max(lo, rows[0][0])
    done = {
        d
        for (d,) in queries._query(
            client,
            "SELECT DISTINCT day FROM bi_stock_daily WHERE day >= {lo:Date}",
            {"lo": first},
            "snapshot days",
        )
    }
    out, d = [], first
    while d < today:
        if d not in done:
            out.append(d)
        d += timedelta(days=1)
    return out


def snapshot_due(client: Client, backfill_days: int, now: datetime | None = None) -> list[Snapshot]:
    """The scheduled job's step: snapshot every due day whose end every region has
    passed (a region still behind leaves the day for a later run)."""
    today = (now or datetime.now(UTC)).date()
    taken = []
    for day in due_days(client, today, backfill_days):
        try:
            taken.append(snapshot_stock(client, day))
        except NotCaughtUp:
            break
    return taken


# -- server-mode access DDL ------------------------------------------------------------

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"not a plain ClickHouse identifier: {name!r}")
    return f"`{name}`"


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def seller_users(lines: Iterable[str]) -> dict[str, str]:
    """`<user>=<owner code>` lines → {user: owner code}."""
    out: dict[str, str] = {}
    for line in lines:
        user, sep, owner = line.partition("=")
        if not sep or not user.strip() or not owner.strip():
            raise ValueError(f"a BI seller user is `<user>=<owner code>`, got {line!r}")
        out[user.strip()] = owner.strip()
    return out


def render_access_ddl(settings: Settings) -> str:
    """DDL for a ClickHouse server: role `bi_reader` with SELECT on the BI relations only
    (they run with their definer's rights, so nothing below them is granted), a settings
    profile holding the BI limits with readonly = 1, users seeing every owner
    (`bi_users`), and per-seller users (`bi_seller_users`) whose row policies keep one
    owner. Users are created unable to log in (HOST NONE): give each a password and
    hosts with `ALTER USER <user> IDENTIFIED WITH sha256_password BY '...' HOST ANY`."""
    db = _ident(settings.bi_database)
    on = f" ON CLUSTER {_ident(settings.clickhouse_cluster)}" if settings.clickhouse_cluster else ""
    limits = {
        **session_settings(settings),
        **{k: v for k, v in _FEATURES_OFF.items() if k != "allow_ddl"},
        "readonly": 1,
    }
    profile = ", ".join(
        f"{k} = {_literal(v) if isinstance(v, str) else v}" for k, v in limits.items()
    )
    out = [
        "-- GENERATED by `stockcdc bi access-ddl` from the settings (STOCKCDC_BI_*).",
        "-- Server config: access_control_improvements.select_from_system_db_requires_grant",
        "-- and select_from_information_schema_requires_grant = true keep system tables shut.",
        f"CREATE ROLE IF NOT EXISTS bi_reader{on};",
        f"CREATE SETTINGS PROFILE IF NOT EXISTS bi_limits{on} SETTINGS {profile} TO bi_reader;",
    ]
    out += [f"GRANT{on} SELECT ON {db}.{_ident(r)} TO bi_reader;" for r in BI_RELATIONS]
    sellers = seller_users(settings.bi_seller_users)
    everyone = [u for u in settings.bi_users if u not in sellers]
    for user in (*everyone, *sellers):
        out.append(
            f"CREATE USER IF NOT EXISTS {_ident(user)}{on} HOST NONE"
            " DEFAULT ROLE bi_reader SETTINGS PROFILE bi_limits;"
        )
        out.append(f"GRANT{on} bi_reader TO {_ident(user)};")
    for relation in BI_RELATIONS:  # every one has an `owner` column
        if everyone:
            out.append(
                f"CREATE ROW POLICY IF NOT EXISTS bi_all_owners ON {db}.{_ident(relation)}{on}"
                f" FOR SELECT USING 1 TO {', '.join(_ident(u) for u in everyone)};"
            )
        for user, owner in sellers.items():
            out.append(
                f"CREATE ROW POLICY IF NOT EXISTS {_ident('bi_owner_' + user)}"
                f" ON {db}.{_ident(relation)}{on}"
                f" FOR SELECT USING owner = {_literal(owner)} TO {_ident(user)};"
            )
    return "\n".join(out) + "\n"
