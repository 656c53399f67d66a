"""Rows of the user directory: one per user or group, built from the Redis records, and the frame of them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from core.accounts import (
    Tier,
    User,
    effective_tier,
)
from core.models import OpportunityKind

if TYPE_CHECKING:
    pass
from core.eligibility.opportunity import EligibilityPolicy
from core.eligibility.schema import ALL_KINDS_MASK, DIRECTORY_SCHEMA, KIND_BIT, NO_EXPIRY_MS, to_ms


def language_of(user: User) -> str:
    """The language of a user's pushes: their setting, else their Telegram app's
    (``language_code``, its primary subtag: ``pt-br`` → ``pt``), else English. The bot
    renders a language it does not speak in English."""
    chosen = user.preferences.language or user.language_code or "en"
    return chosen.strip().replace("_", "-").split("-", 1)[0].lower() or "en"


def user_row(
    user: User,
    policy: EligibilityPolicy,
    *,
    session_expires_ms: int | None = None,
    blocked: bool = False,
    day_bucket: int = 0,
    day_used: int = 0,
    hour_bucket: int = 0,
    hour_used: int = 0,
) -> dict[str, Any]:
    """One directory row for a user (registers new names in ``policy.vocab``)."""
    prefs = user.preferences
    vocab = policy.vocab
    n, smask, extra = vocab.symbol_columns(prefs.symbols)
    _, bmask, bextra = vocab.symbol_columns(prefs.blocked_symbols)
    window = -1 if prefs.active_hours is None else prefs.active_hours[0] * 24 + prefs.active_hours[1]
    key_names = {k.strip().lower() for k in user.api_keys}
    ai = key_names & policy.ai_key_names
    return {
        "user_id": user.id,
        "chat_id": user.id,
        "audience": "user",
        "tier": effective_tier(user.id, user.tier, policy.superadmin_ids).value,
        "session_expires_ms": session_expires_ms,
        "blocked": blocked,
        "pushes_on": prefs.pushes_on,
        "kinds": sum(KIND_BIT[OpportunityKind(k)] for k in prefs.kinds),
        "exchanges": vocab.exchange_mask(prefs.exchanges),
        "symbols_n": n,
        "symbols_mask": smask,
        "symbols_extra": extra,
        "blocked_exchanges": vocab.exchange_mask(prefs.blocked_exchanges),
        "blocked_symbols_mask": bmask,
        "blocked_symbols_extra": bextra,
        "min_size_usd": float(prefs.min_size_usd),
        "min_net_bps": float(prefs.min_net_bps),
        "min_net_apr_pct": float(prefs.min_net_apr_pct),
        "min_confidence": float(prefs.min_confidence),
        "muted_until_ms": None if prefs.muted_until is None else to_ms(prefs.muted_until),
        "tz": vocab.tz_code(prefs.timezone),
        "window": window,
        "outside_silent": prefs.outside_hours == "silent",
        "only_my_exchanges": prefs.only_my_exchanges,
        "key_exchanges": vocab.exchange_mask(key_names - ai),
        "has_ai_key": bool(ai),
        "beta": vocab.beta_mask(user.beta_flags),
        "restricted": user.restricted,
        "region": vocab.region_code(user.region),
        "lang": vocab.language_code(language_of(user)),
        "day_bucket": day_bucket,
        "day_used": day_used,
        "hour_bucket": hour_bucket,
        "hour_used": hour_used,
    }


def group_row(
    chat_id: int,
    policy: EligibilityPolicy,
    *,
    active: bool = True,
    pushes_on: bool = True,
    min_net_bps: float = 0.0,
    min_net_apr_pct: float = 0.0,
    min_confidence: float = 0.0,
    day_bucket: int = 0,
    day_used: int = 0,
    hour_bucket: int = 0,
    hour_used: int = 0,
    lang: str | None = None,
) -> dict[str, Any]:
    """One directory row for a group (``user_id`` = ``chat_id``; Free kinds and delay;
    ``lang``: the language of its pushes, None: English)."""
    return {
        "user_id": chat_id,
        "chat_id": chat_id,
        "audience": "group",
        "tier": Tier.FREE.value,
        "session_expires_ms": NO_EXPIRY_MS,
        "blocked": not active,
        "pushes_on": pushes_on,
        "kinds": ALL_KINDS_MASK,
        "exchanges": 0,
        "symbols_n": 0,
        "symbols_mask": 0,
        "symbols_extra": [],
        "blocked_exchanges": 0,
        "blocked_symbols_mask": 0,
        "blocked_symbols_extra": [],
        "min_size_usd": 0.0,
        "min_net_bps": float(min_net_bps),
        "min_net_apr_pct": float(min_net_apr_pct),
        "min_confidence": float(min_confidence),
        "muted_until_ms": None,
        "tz": 0,
        "lang": policy.vocab.language_code(lang),
        "window": -1,
        "outside_silent": False,
        "only_my_exchanges": False,
        "key_exchanges": 0,
        "has_ai_key": False,
        "beta": 0,
        "restricted": False,
        "region": 0,
        "day_bucket": day_bucket,
        "day_used": day_used,
        "hour_bucket": hour_bucket,
        "hour_used": hour_used,
    }


def directory_frame(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows (dicts of every :data:`DIRECTORY_SCHEMA` column) → a directory frame."""
    return pl.DataFrame(list(rows), schema=DIRECTORY_SCHEMA, orient="row")


def empty_directory() -> pl.DataFrame:
    return pl.DataFrame(schema=DIRECTORY_SCHEMA)
