"""Unit tests of the pure helpers in infra.jvm."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

from infra.jvm import new_cluster_id


def test_cluster_id_is_22_url_safe_characters() -> None:
    for _ in range(200):
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", new_cluster_id())


def test_cluster_id_never_starts_with_a_dash() -> None:
    # 0xF8 encodes to '-' as the first base64 character: kafka-storage's argument parser
    # read such an id as an option, so formatting failed once in 64 fresh installs.
    dashed = bytes([0xF8]) + bytes(15)
    plain = bytes([0x10]) + bytes(15)
    assert base64.urlsafe_b64encode(dashed).decode().startswith("-")
    draws: Iterator[bytes] = iter([dashed, dashed, plain])

    cluster_id = new_cluster_id(lambda: next(draws))

    assert cluster_id == base64.urlsafe_b64encode(plain).decode().rstrip("=")
