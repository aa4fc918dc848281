"""API keys: stored only as hashes, mapped to configured tenants, reloaded on change."""

from __future__ import annotations

import pytest

from embassy.errors import AuthenticationFailed
from embassy.settings import TenantSettings
from embassy.tenants import KeyStore, create_key, hash_key


def store(tmp_path) -> KeyStore:
    return KeyStore(tmp_path / "keys.yaml", {"acme": TenantSettings(jurisdiction="EU", models=["m"])})


def test_key_file_holds_only_the_hash(tmp_path):
    key = create_key(tmp_path / "keys.yaml", "acme")
    text = (tmp_path / "keys.yaml").read_text()
    assert key not in text and hash_key(key) in text
    assert oct((tmp_path / "keys.yaml").stat().st_mode)[-3:] == "600"


def test_created_key_authenticates_without_restart(tmp_path):
    keys = store(tmp_path)
    with pytest.raises(AuthenticationFailed):
        keys.authenticate("Bearer emb-nothing")
    key = create_key(tmp_path / "keys.yaml", "acme")
    tenant = keys.authenticate(f"Bearer {key}")
    assert tenant.id == "acme" and tenant.jurisdiction == "EU" and "m" in tenant.models


@pytest.mark.parametrize("header", [None, "", "Bearer ", "Basic abc", "emb-abc"])
def test_missing_or_malformed_header_is_refused(tmp_path, header):
    with pytest.raises(AuthenticationFailed) as err:
        store(tmp_path).authenticate(header)
    assert err.value.status == 401


def test_key_of_unconfigured_tenant_is_refused(tmp_path):
    key = create_key(tmp_path / "keys.yaml", "gone")
    with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
        store(tmp_path).authenticate(f"Bearer {key}")
