"""Errors of the read model; the root is `ReadModelError`, every one transient or terminal.

`classify` is the one place that maps ClickHouse / driver errors into the two kinds.
"""

from __future__ import annotations

import re

from schemas.errors import TerminalError, TransientError


class ReadModelError(Exception):
    """Root of every error raised by `read_model`."""


class ReadModelTransientError(ReadModelError, TransientError):
    """Retry the same call later (server unreachable, timeout, too many parts, ...)."""


class ReadModelTerminalError(ReadModelError, TerminalError):
    """Retrying won't help (bad SQL, type mismatch, unknown table, ...)."""


class MigrationError(ReadModelTerminalError):
    """A DDL file failed, or an applied file was changed afterwards."""


#: ClickHouse error codes worth retrying: timeouts, network, memory/parts pressure,
#: replicas/keeper away, too many simultaneous queries.
TRANSIENT_CODES: frozenset[int] = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        164,  # READONLY (replica in read-only mode while keeper is away)
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
    }
)
_CODE = re.compile(r"Code:\s*(\d+)")


def error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code of an exception, from its attribute or message."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    m = _CODE.search(str(exc))
    return int(m.group(1)) if m else None


def classify(exc: BaseException, what: str) -> ReadModelError:
    """Map a driver/server exception to a transient or terminal `ReadModelError`."""
    if isinstance(exc, ReadModelError):
        return exc
    code = error_code(exc)
    if code is not None:
        kind: type[ReadModelError] = (
            ReadModelTransientError if code in TRANSIENT_CODES else ReadModelTerminalError
        )
    elif isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        kind = ReadModelTransientError
    else:
        # Not a server answer: an error on our side of the wire (bad data types).
        kind = ReadModelTerminalError
    err = kind(f"{what}: {exc}")
    err.__cause__ = exc
    return err
