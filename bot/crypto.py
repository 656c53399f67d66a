"""Users' exchange API keys encrypted at rest (Fernet, ``cryptography``).

- The key is ``ARBFLOW_SECRET_KEY``; when empty, :func:`load_or_create_secret`
  generates one with ``Fernet.generate_key()`` and keeps it in
  ``<data_dir>/secret.key`` (mode 0600), reused on every later start. Losing that
  file makes the stored API keys unreadable (users add them again); back it up with
  the Redis data.
- Key rotation: ``ARBFLOW_SECRET_KEY`` may hold several keys separated by commas;
  the first encrypts, all decrypt (``MultiFernet``), so old ciphertexts stay readable.
- Secrets never reach a log or an exception message: errors name the problem, not
  the value, and :class:`ApiCredentials` hides its fields in ``repr``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from core.accounts import StoredApiKey, mask
from core.errors import ArbflowError, ConfigError
from core.settings import Settings

SECRET_FILE = "secret.key"


class UndecryptableSecret(ArbflowError):
    """A ciphertext cannot be decrypted with the configured key(s): wrong key, or corrupted."""


def _fernet(key: str) -> Fernet:
    try:
        return Fernet(key.strip().encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ConfigError(
            "ARBFLOW_SECRET_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes); "
            "leave it empty to have one generated under the data dir, or create one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
        ) from exc


class KeyVault:
    """Encrypts and decrypts short secrets with the configured Fernet key(s)."""

    def __init__(self, secret_key: str) -> None:
        keys = [k for k in (part.strip() for part in secret_key.split(",")) if k]
        if not keys:
            raise ConfigError("no secret key given: set ARBFLOW_SECRET_KEY or use load_or_create_secret()")
        self._fernet = MultiFernet([_fernet(k) for k in keys])

    def __repr__(self) -> str:
        return "KeyVault(<hidden>)"

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError) as exc:
            raise UndecryptableSecret(
                "a stored secret cannot be decrypted: ARBFLOW_SECRET_KEY changed or the data is corrupt"
            ) from exc

    # -- exchange API keys

    @staticmethod
    def record(exchange: str, api_key: str, now: datetime) -> StoredApiKey:
        """What ``/apikeys add`` keeps: the exchange and the masked key, no credentials
        (nothing uses them; :meth:`seal` is there for a feature that will)."""
        return StoredApiKey(exchange=exchange.strip().lower(), key_masked=mask(api_key), added_at=now)

    def seal(
        self,
        exchange: str,
        api_key: str,
        secret: str,
        now: datetime,
        *,
        password: str | None = None,
        read_only: bool = True,
    ) -> StoredApiKey:
        """A ``StoredApiKey``: the key masked, the credentials as one Fernet ciphertext."""
        body = json.dumps({"api_key": api_key, "secret": secret, "password": password})
        return StoredApiKey(
            exchange=exchange.strip().lower(),
            key_masked=mask(api_key),
            secret_ciphertext=self.encrypt(body),
            added_at=now,
            read_only=read_only,
        )

    def unseal(self, stored: StoredApiKey) -> ApiCredentials:
        if stored.secret_ciphertext is None:
            raise UndecryptableSecret(f"no credentials are stored for {stored.exchange}: only the masked key")
        data = json.loads(self.decrypt(stored.secret_ciphertext))
        return ApiCredentials(
            exchange=stored.exchange,
            api_key=data["api_key"],
            secret=data["secret"],
            password=data.get("password"),
        )


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """Decrypted credentials, for the moment they are used (ccxt ``apiKey``/``secret``/``password``)."""

    exchange: str
    api_key: str = field(repr=False)
    secret: str = field(repr=False)
    password: str | None = field(default=None, repr=False)


def load_or_create_secret(data_dir: Path) -> str:
    """The key in ``<data_dir>/secret.key``, created (0600) on first use.

    Safe when several processes start at once: the file is written under a temporary
    name and hard-linked into place, so exactly one key wins and everyone reads it.
    """
    data_dir = Path(data_dir)
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{SECRET_FILE}.{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key() + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    key = path.read_text(encoding="ascii").strip()
    _fernet(key)  # a damaged file is a config error, reported without its content
    return key


def vault_from_settings(settings: Settings) -> KeyVault:
    """``ARBFLOW_SECRET_KEY`` when set, else the generated key under the data dir."""
    return KeyVault(settings.secret_key or load_or_create_secret(settings.data_dir))
