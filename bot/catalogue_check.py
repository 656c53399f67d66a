"""Every text of the code against the catalogues: ``python -m bot.catalogue_check`` (``make i18n-check``).

The literals of every ``_()``, ``ngettext()``, ``lazy()`` call (and gettext's usual names)
are extracted with Babel's extractor from the packages that talk to users, and each
language of ``notify/locales`` must translate every one of them, with the same
``{placeholders}`` and the same HTML tags as the English text (a plural in every form
its language has), each in one ``.po`` file only. Exits 1 and lists what is missing or wrong; the unit test
``tests/unit/bot/test_catalogues.py`` runs the same check.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

from notify.i18n import LANGUAGES, LOCALES_DIR, SOURCE_LOCALE, read_catalogue

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS: tuple[str, ...] = ("notify", "bot", "actors", "serve")
"""The packages whose literals reach users (``core`` and ``pipeline`` never talk to them)."""
KEYWORDS = {**DEFAULT_KEYWORDS, "lazy": None}

_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_TAG = re.compile(r"</?\s*([a-zA-Z][\w-]*)[^<>]*>")


@dataclass(frozen=True, slots=True)
class Message:
    """One extracted text: its singular (the msgid), its plural, where it is written."""

    id: str
    plural: str | None
    where: str


def extract(root: Path = ROOT, dirs: Sequence[str] = SOURCE_DIRS) -> dict[str, Message]:
    """Every translatable literal of ``dirs`` by msgid (the first place it is written)."""
    found: dict[str, Message] = {}
    for name in dirs:
        for filename, lineno, message, _comments, _context in extract_from_dir(
            root / name, method_map=[("**.py", "python")], keywords=KEYWORDS
        ):
            singular, plural = (message[0], message[1]) if isinstance(message, tuple) else (message, None)
            if singular and singular not in found:
                found[singular] = Message(singular, plural, f"{name}/{filename}:{lineno}")
    return found


def placeholders(text: str) -> Counter[str]:
    return Counter(_PLACEHOLDER.findall(text))


def tags(text: str) -> Counter[str]:
    return Counter(m.group(0).split()[0].rstrip(">").lower() for m in _TAG.finditer(text))


def problems(messages: Iterable[Message], catalogue: Catalog) -> list[str]:
    """What is missing or differs in ``catalogue`` for ``messages`` (empty: complete)."""
    out = []
    for m in messages:
        entry = catalogue.get(m.id)
        if entry is None or not entry.string or entry.fuzzy:
            out.append(f"{m.where}: no translation of {m.id!r}")
            continue
        sources = [m.id] if m.plural is None else [m.id, m.plural]
        forms = [entry.string] if isinstance(entry.string, str) else list(entry.string)
        if m.plural is not None and (len(forms) != catalogue.num_plurals or not all(forms)):
            out.append(f"{m.where}: {m.id!r} needs {catalogue.num_plurals} plural forms")
            continue
        for form in forms:
            # every form carries each placeholder of the English (a plural's {n} in each)
            if not any(placeholders(form) == placeholders(src) for src in sources):
                out.append(f"{m.where}: placeholders differ in {form!r} (from {m.id!r})")
            if not any(tags(form) == tags(src) for src in sources):
                out.append(f"{m.where}: HTML tags differ in {form!r} (from {m.id!r})")
    return out


def duplicates(locale_dir: Path) -> list[str]:
    """Texts translated in more than one ``.po`` file of a language: each text has one home
    (the files are merged, so a second translation would silently replace the first)."""
    homes: dict[str, str] = {}
    out = []
    for po in sorted((locale_dir / "LC_MESSAGES").glob("*.po")):
        with po.open("rb") as fh:
            for message in read_po(fh, locale=locale_dir.name):
                if not message.id:
                    continue
                key = message.id if isinstance(message.id, str) else message.id[0]
                if key in homes:
                    out.append(f"{po.name}: {key!r} is translated in {homes[key]} too")
                homes.setdefault(key, po.name)
    return out


def check(languages: Iterable[str] = LANGUAGES) -> list[str]:
    messages = list(extract().values())
    out = []
    for language in languages:
        if language == SOURCE_LOCALE:
            continue
        catalogue = read_catalogue(LOCALES_DIR / language, language)
        out += [f"[{language}] {p}" for p in problems(messages, catalogue)]
        out += [f"[{language}] {p}" for p in duplicates(LOCALES_DIR / language)]
    return out


def main(argv: Sequence[str] = ()) -> int:
    found = check(argv or LANGUAGES)
    for line in found:
        print(line)
    print(f"{len(extract())} texts; {len(found)} problems", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
