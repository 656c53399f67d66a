"""The language of a user's pushes, as the directory encodes it (``core.eligibility``)."""

from __future__ import annotations

from datetime import UTC, datetime

from core.accounts import User
from core.eligibility import EligibilityPolicy, group_row, language_of, user_row

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def test_the_setting_then_the_app_then_english() -> None:
    assert language_of(User.new(1, NOW)) == "en"
    assert language_of(User.new(1, NOW, language_code="ru-RU")) == "ru"
    assert language_of(User.new(1, NOW, language_code="pt_BR")) == "pt"
    assert language_of(User.new(1, NOW, language="en", language_code="ru")) == "en"  # a choice beats the app
    assert language_of(User.new(1, NOW, language="ru")) == "ru"


def test_the_directory_row_carries_it_as_a_code_of_the_vocabulary() -> None:
    policy = EligibilityPolicy()
    en = user_row(User.new(1, NOW), policy)
    ru = user_row(User.new(2, NOW, language_code="ru"), policy)
    assert en["lang"] == 0 and policy.vocab.languages[0] == "en"
    assert policy.vocab.languages[ru["lang"]] == "ru"


def test_a_group_row_carries_the_language_it_was_added_in() -> None:
    policy = EligibilityPolicy()
    assert group_row(-100, policy)["lang"] == 0  # a group record of an older release: English
    assert policy.vocab.languages[group_row(-101, policy, lang="ru")["lang"]] == "ru"
