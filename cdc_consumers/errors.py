"""Errors of the consumer stage; the root is `ConsumerError`."""

from __future__ import annotations

from schemas.errors import TerminalError


class ConsumerError(Exception):
    """Root of every error raised by `cdc_consumers`."""


class DecodeError(ConsumerError, TerminalError):
    """A record that can't become an `Event`: dead-letter it with `reason` and its bytes.

    `reason` is a short stable code for metrics (e.g. `unknown_table`), `detail` says
    what exactly was wrong. Always terminal: the same bytes fail the same way.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
