"""The invoice payloads' signing key (the payments themselves: :mod:`state.payments`)."""

from __future__ import annotations

import hashlib

from core.settings import Settings


def payload_key(settings: Settings) -> bytes:
    """The invoice payloads' signing key, derived from the secret key (never the key itself)."""
    from bot.crypto import load_or_create_secret

    secret = settings.secret_key or load_or_create_secret(settings.data_dir)
    first = next((k.strip() for k in secret.split(",") if k.strip()), "")
    return hashlib.sha256(b"arbflow invoice payload\x00" + first.encode()).digest()


__all__ = ["payload_key"]
