"""Every text of the code is translated in every language, with its placeholders and tags."""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog

from bot import catalogue_check as cc
from notify.i18n import LANGUAGES, LOCALES_DIR


def test_every_text_of_the_code_is_extracted() -> None:
    found = cc.extract()
    assert len(found) > 250
    # module-level lazies, f-string-free renderers, plurals and keyboard labels all come out
    assert "Spot spreads" in found  # lazy() in a Translated mapping
    assert "🐢 Slow down a little — I'll answer again in a moment." in found  # a constant text
    assert found["📬 <b>{n} new opportunity</b>"].plural == "📬 <b>{n} new opportunities</b>"
    assert "Only my exchanges" in found  # a button label (bot/keyboards.py)


def test_every_language_translates_every_text() -> None:
    assert "ru" in LANGUAGES
    assert cc.check() == []


def _catalogue(entries: dict[str, str | tuple[str, ...]]) -> Catalog:
    cat = Catalog(locale="ru")
    for msgid, text in entries.items():
        cat.add(msgid, text)
    return cat


def test_the_check_finds_missing_and_broken_translations() -> None:
    msgs = [
        cc.Message("Hi {name}", None, "a.py:1"),
        cc.Message("<b>Net</b> {v}", None, "a.py:2"),
        cc.Message("Missing", None, "a.py:3"),
        cc.Message("{n} push", "{n} pushes", "a.py:4"),
    ]
    cat = _catalogue({"Hi {name}": "Привет, {имя}", "<b>Net</b> {v}": "Чистыми {v}"})
    cat.add(("{n} push", "{n} pushes"), ("{n} уведомление", "{n} уведомления"))  # 2 of 3 forms
    found = cc.problems(msgs, cat)
    assert any("placeholders differ" in p and "{имя}" in p for p in found)
    assert any("HTML tags differ" in p for p in found)
    assert any("no translation of 'Missing'" in p for p in found)
    assert any("3 plural forms" in p for p in found)
    good = _catalogue(
        {"Hi {name}": "Привет, {name}", "<b>Net</b> {v}": "<b>Чистыми</b> {v}", "Missing": "Есть"}
    )
    good.add(("{n} push", "{n} pushes"), ("{n} уведомление", "{n} уведомления", "{n} уведомлений"))
    assert cc.problems(msgs, good) == []


def test_the_command_passes_on_the_repo() -> None:
    assert cc.main(["ru"]) == 0


def test_a_text_translated_in_two_files_is_found(tmp_path: Path) -> None:
    from bot.catalogue_check import duplicates

    folder = tmp_path / "ru" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    head = 'msgid ""\nmsgstr ""\n"Language: ru\\n"\n\n'
    (folder / "a.po").write_text(head + 'msgid "Settings"\nmsgstr "Настройки"\n', encoding="utf-8")
    (folder / "b.po").write_text(head + 'msgid "Settings"\nmsgstr "Параметры"\n', encoding="utf-8")
    assert duplicates(tmp_path / "ru") == ["b.po: 'Settings' is translated in a.po too"]
    assert duplicates(LOCALES_DIR / "ru") == []
