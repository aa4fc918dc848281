"""API keys and tenants.

Keys are stored only as SHA-256 hashes in a YAML file (`keys_file`). A plain hash is
enough here, unlike for passwords: keys are 256 random bits, so there is nothing to
brute-force, and a constant-cost lookup keeps auth off the hot path's budget.
The file is re-read when it changes, so `embassy keys create` works without a restart.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from embassy.errors import AuthenticationFailed
from embassy.settings import EmbassySettings, TenantSettings

KEY_PREFIX = "emb-"


@dataclass(frozen=True)
class Tenant:
    id: str
    jurisdiction: str
    models: frozenset[str]
    subject_header: bool = False  # may name another data-subject jurisdiction per request


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


ADMIN = "admin"  # the role of operator keys: administration endpoints, no chat
_OPERATOR = "@operator"  # what such a key maps to; never a tenant id (ids start with [a-z0-9])


def _read_keys(path: Path) -> dict[str, str]:
    """hash -> tenant id, or _OPERATOR for an operator key."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return {}
    return {row["sha256"]: _OPERATOR if row.get("role") == ADMIN else row["tenant"] for row in data.get("keys", [])}


def create_key(path: Path, tenant: str | None, admin: bool = False) -> str:
    """Add a new key for `tenant` (or an operator key) to the key file and return it.
    Only its hash is written."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    row = {"sha256": hash_key(key), "role": ADMIN} if admin else {"sha256": hash_key(key), "tenant": tenant}
    data.setdefault("keys", []).append({**row, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    # Write-then-rename: a reader never sees a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return key


def tenant_has_key(path: Path, tenant: str) -> bool:
    return tenant in _read_keys(path).values()


class KeyStore:
    """Maps bearer keys to tenants configured in the settings."""

    def __init__(self, path: Path, tenants: dict[str, TenantSettings]) -> None:
        self.path = path
        self.tenants = {tid: Tenant(tid, t.jurisdiction, frozenset(t.models), t.subject_header)
                        for tid, t in tenants.items()}
        self._mtime: float | None = None
        self._by_hash: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: EmbassySettings) -> "KeyStore":
        return cls(settings.keys_path, dict(settings.tenants))

    def _refresh(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime != self._mtime:
            self._by_hash = _read_keys(self.path) if mtime is not None else {}
            self._mtime = mtime

    def authenticate(self, authorization: str | None) -> Tenant:
        """Tenant for an `Authorization: Bearer <key>` header value.

        Raises:
            AuthenticationFailed: header missing or malformed, key unknown, or its tenant is
                no longer configured. One message for all, so callers cannot probe.
        """
        tenant = self.tenants.get(self._holder(authorization))
        if tenant is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return tenant

    def authenticate_admin_or_tenant(self, authorization: str | None) -> Tenant | None:
        """For administration endpoints: None for an operator key, else the key's tenant
        (which may act on its own data only). Raises AuthenticationFailed like `authenticate`."""
        holder = self._holder(authorization)
        if holder == _OPERATOR:
            return None
        return self.authenticate(authorization)

    def _holder(self, authorization: str | None) -> str | None:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
        self._refresh()
        return self._by_hash.get(hash_key(key.strip()))
