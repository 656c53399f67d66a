"""The bot's languages: gettext catalogues in the repo, read at start.

Catalogues live in ``notify/locales/<lang>/LC_MESSAGES/*.po``; every ``.po`` file of a
language is merged into one catalogue (one file per area of the bot keeps edits apart),
compiled in memory with Babel, and served through aiogram's :class:`I18n`. English is the
source language: a string without a translation is shown as written.

How to write a text (the extractor reads only literals):

- ``_("Sessions last {days} days").format(days=7)`` — never ``_(f"...")``;
- ``ngettext("{n} push", "{n} pushes", n).format(n=n)`` for counts;
- ``lazy("Settings")`` for module-level constants (button labels), resolved when shown;
- outside an update (a push rendered by a queue shard) wrap the rendering in
  ``with use_locale(user_language):``.

The locale of an update is picked by :func:`pick_locale`: the user's language setting,
else the Telegram client's ``language_code``, else English.
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiogram.utils.i18n import I18n
from aiogram.utils.i18n.lazy_proxy import LazyProxy
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from notify.languages import LANGUAGES, SOURCE_LOCALE, normalise_language, pick_locale

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "arbflow"


def read_catalogue(locale_dir: Path, locale: str) -> Catalog:
    """Every ``.po`` file of one language merged into one catalogue (later files win)."""
    merged = Catalog(locale=locale, domain=DOMAIN)
    for po in sorted((locale_dir / "LC_MESSAGES").glob("*.po")):
        with po.open("rb") as fh:
            part = read_po(fh, locale=locale)
        if not merged.mime_headers or po.name == f"{DOMAIN}.po":
            merged.mime_headers = part.mime_headers  # Plural-Forms travels in the header
        for message in part:
            if message.id and message.string and not message.fuzzy:
                merged[message.id] = message
    return merged


class Catalogues(I18n):
    """aiogram's :class:`I18n` reading ``.po`` sources instead of compiled ``.mo`` files."""

    def find_locales(self) -> dict[str, gettext.GNUTranslations]:
        translations: dict[str, gettext.GNUTranslations] = {}
        if not self.path.is_dir():
            return translations
        for locale_dir in sorted(p for p in self.path.iterdir() if p.is_dir()):
            catalogue = read_catalogue(locale_dir, locale_dir.name)
            buffer = io.BytesIO()
            write_mo(buffer, catalogue)
            buffer.seek(0)
            translations[locale_dir.name] = gettext.GNUTranslations(buffer)
        return translations


I18N = Catalogues(path=LOCALES_DIR, default_locale=SOURCE_LOCALE, domain=DOMAIN)


def _(text: str) -> str:
    """``text`` in the current locale."""
    return I18N.gettext(text)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of ``singular``/``plural`` for ``n`` in the current locale."""
    return I18N.gettext(singular, plural, n)


def lazy(text: str) -> LazyProxy:
    """``text`` translated when it is shown (for module-level constants)."""
    return I18N.lazy_gettext(text)


def current_locale() -> str:
    return I18N.current_locale


@contextmanager
def use_locale(locale: str | None) -> Iterator[str]:
    """Render in ``locale`` (an unknown or missing one falls back to English)."""
    chosen = locale if locale in I18N.available_locales or locale == SOURCE_LOCALE else SOURCE_LOCALE
    with I18N.use_locale(chosen):
        yield chosen


__all__ = [
    "I18N",
    "LANGUAGES",
    "SOURCE_LOCALE",
    "current_locale",
    "lazy",
    "ngettext",
    "normalise_language",
    "pick_locale",
    "use_locale",
]
