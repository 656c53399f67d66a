"""The languages a user can pick and how one is chosen for a user: plain functions, without
aiogram (``notify.i18n`` renders in them), so the actors that only choose a language (the
queue shards' missed digests, the distributor and the monitor through them) do not import
aiogram for it."""

from __future__ import annotations

SOURCE_LOCALE = "en"

# The languages a user can pick, with their name in that language (for /settings).
LANGUAGES: dict[str, str] = {"en": "English", "ru": "Русский"}


def normalise_language(code: str | None) -> str | None:
    """A supported language for a setting or a Telegram ``language_code`` (``ru-RU`` → ``ru``)."""
    if not code:
        return None
    primary = code.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if primary in LANGUAGES else None


def pick_locale(setting: str | None, language_code: str | None) -> str:
    """The user's language setting, else their client's language, else English."""
    return normalise_language(setting) or normalise_language(language_code) or SOURCE_LOCALE


__all__ = ["LANGUAGES", "SOURCE_LOCALE", "normalise_language", "pick_locale"]
