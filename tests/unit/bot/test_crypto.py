"""API keys at rest: Fernet round trip, wrong keys, the generated key file."""

from __future__ import annotations

import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.crypto import KeyVault, UndecryptableSecret, load_or_create_secret, vault_from_settings
from core.errors import ArbflowError, ConfigError
from core.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_round_trip() -> None:
    vault = KeyVault(Fernet.generate_key().decode())
    for text in ["", "s3cr3t", "ключ 🔑" * 50]:
        token = vault.encrypt(text)
        assert text not in token or text == ""
        assert vault.decrypt(token) == text
    assert vault.encrypt("x") != vault.encrypt("x")  # random IV


def test_wrong_key_and_garbage() -> None:
    a, b = KeyVault(Fernet.generate_key().decode()), KeyVault(Fernet.generate_key().decode())
    token = a.encrypt("secret")
    with pytest.raises(UndecryptableSecret) as info:
        b.decrypt(token)
    assert isinstance(info.value, ArbflowError) and "secret" not in str(info.value).replace(
        "stored secret", ""
    )
    for garbage in ["", "not-a-token", "gAAAAA" + "x" * 40, "ü"]:
        with pytest.raises(UndecryptableSecret):
            a.decrypt(garbage)


@pytest.mark.parametrize("bad", ["", "short", "x" * 44, "ü" * 44, " , "])
def test_bad_key_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        KeyVault(bad)
    assert bad.strip(" ,") == "" or bad not in str(info.value)


def test_rotation_old_keys_still_decrypt() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = KeyVault(old).encrypt("api-secret")
    rotated = KeyVault(f"{new},{old}")
    assert rotated.decrypt(token) == "api-secret"
    assert KeyVault(new).decrypt(rotated.encrypt("fresh")) == "fresh"


def test_seal_and_unseal_api_keys() -> None:
    vault = KeyVault(Fernet.generate_key().decode())
    stored = vault.seal("Binance", "AKIAabcdefgh12345678", "topsecretvalue", NOW, password="pw")
    assert stored.exchange == "binance" and stored.key_masked == "AKIA…5678"
    # the permission we were told is the one stored (not a default)
    assert vault.seal("okx", "AKIAabcdefgh12345678", "s" * 12, NOW, read_only=False).read_only is False
    dumped = stored.model_dump_json()
    assert "topsecretvalue" not in dumped and "AKIAabcdefgh12345678" not in dumped
    creds = vault.unseal(stored)
    assert (creds.api_key, creds.secret, creds.password) == ("AKIAabcdefgh12345678", "topsecretvalue", "pw")
    assert "topsecret" not in repr(creds) and "AKIAabcd" not in repr(creds)
    assert "hidden" in repr(vault)


def test_secret_file_created_0600_and_reused(tmp_path: Path) -> None:
    data = tmp_path / "var"
    key = load_or_create_secret(data)
    path = data / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(data) == key
    KeyVault(key)  # valid
    assert [p.name for p in data.iterdir()] == ["secret.key"]  # no temp files left
    path.chmod(0o644)
    assert load_or_create_secret(data) == key and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secret_file_concurrent_creation_agrees(tmp_path: Path) -> None:
    keys: list[str] = []
    threads = [
        threading.Thread(target=lambda: keys.append(load_or_create_secret(tmp_path))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1


def test_damaged_secret_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("garbage")
    os.chmod(tmp_path / "secret.key", 0o600)
    with pytest.raises(ConfigError):
        load_or_create_secret(tmp_path)


def test_vault_from_settings(tmp_path: Path) -> None:
    explicit = Fernet.generate_key().decode()
    token = vault_from_settings(Settings(data_dir=tmp_path, secret_key=explicit)).encrypt("a")
    assert KeyVault(explicit).decrypt(token) == "a"
    assert not (tmp_path / "secret.key").exists()
    generated = vault_from_settings(Settings(data_dir=tmp_path))
    assert (tmp_path / "secret.key").exists()
    assert KeyVault(load_or_create_secret(tmp_path)).decrypt(generated.encrypt("b")) == "b"
