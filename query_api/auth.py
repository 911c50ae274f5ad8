"""API keys: `Authorization: Bearer <key>`, keys configured hashed (never in clear text).

A configured key is one line `<scope>:<owner or *>:<sha256 hex>` (settings.api_keys).
Keys are 32 random bytes, so a plain SHA-256 is the right hash: there is nothing to
brute-force, and a slow KDF (scrypt) would only add latency to every request.

Scopes: `oms` sees every owner; `seller` sees its one owner, everything else answers 404
as if absent; `bi` may only run read-only SQL (`POST /v1/sql`, query_api/sql.py) and is
refused by every other route, as seller and oms keys are refused by `/v1/sql`. A bi key
sees every seller: in embedded chDB mode there are no ClickHouse users or row policies;
per-seller BI isolation needs server mode (`stockcdc bi access-ddl`, docs/bi.md).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from query_api.errors import ApiError

#: DEV-ONLY demo keys, configured by default (settings.DEV_API_KEYS holds their hashes).
#: Anyone can read them here: replace them with STOCKCDC_API_KEYS outside a laptop.
DEMO_KEYS: Mapping[str, str] = {
    "oms": "dev-oms-DO-NOT-DEPLOY",
    "seller:SELLER-0001": "dev-seller-0001-DO-NOT-DEPLOY",
    "bi": "dev-bi-DO-NOT-DEPLOY",
}

KEY_PREFIX = "sck_"


class Scope(StrEnum):
    OMS = "oms"
    SELLER = "seller"
    BI = "bi"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a scope and, for sellers, the one owner code it may see."""

    scope: Scope
    owner: str | None  # None: every owner (oms)

    def may_see(self, owner: str) -> bool:
        return self.owner is None or self.owner == owner


class KeyConfigError(ValueError):
    """A configured key line is malformed (raised at startup, never per request)."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key_line(line: str) -> tuple[str, Principal]:
    """`<scope>:<owner or *>:<sha256 hex>` → (hash, principal)."""
    scope_s, sep, rest = line.strip().partition(":")
    owner, sep2, digest = rest.rpartition(":")
    if not (sep and sep2):
        raise KeyConfigError("an API key line is `<scope>:<owner or *>:<sha256 hex>`")
    try:
        scope = Scope(scope_s)
    except ValueError as exc:
        raise KeyConfigError(f"unknown API key scope {scope_s!r}") from exc
    digest = digest.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise KeyConfigError("an API key hash must be 64 hex digits (sha256)")
    if scope is Scope.SELLER and owner in ("", "*"):
        raise KeyConfigError("a seller key needs an owner code")
    if scope in (Scope.OMS, Scope.BI) and owner != "*":
        raise KeyConfigError(f"an {scope.value} key sees every owner: write `*` as its owner")
    return digest, Principal(scope, None if owner == "*" else owner)


class KeyStore:
    """Configured keys by hash; `authenticate` maps a bearer header to a principal."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._by_hash = dict(parse_key_line(line) for line in lines)

    def __len__(self) -> int:
        return len(self._by_hash)

    def authenticate(self, authorization: str | None) -> Principal:
        """A principal, or a 401 ApiError (missing header, wrong scheme, unknown key)."""
        if not authorization:
            raise unauthorized("missing Authorization: Bearer <key>")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise unauthorized("Authorization must be `Bearer <key>`")
        principal = self._by_hash.get(hash_key(key.strip()))
        if principal is None:
            raise unauthorized("unknown or revoked API key")
        return principal


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, {"WWW-Authenticate": "Bearer"})


def new_key(scope: Scope, owner: str | None) -> tuple[str, str]:
    """A fresh random key and its config line (only the line is stored anywhere)."""
    if (scope is Scope.SELLER) != (owner is not None):
        raise KeyConfigError("seller keys take exactly one owner; oms and bi keys none")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, f"{scope.value}:{owner or '*'}:{hash_key(key)}"
