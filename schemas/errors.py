"""Markers every package's errors carry, so callers decide by kind, not by class list:
retry a `TransientError` (with backoff), dead-letter or stop on a `TerminalError`."""

from __future__ import annotations


class TransientError(Exception):
    """May succeed if retried unchanged (a server restart, a timeout, too many parts)."""


class TerminalError(Exception):
    """Will fail again if retried unchanged (bad data, bad SQL, a missing table)."""
