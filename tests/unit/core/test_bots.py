"""The pool of bot tokens, pure: ids, the pool, webhook paths and per-bot secrets, settings."""

from __future__ import annotations

import pytest

from core.bots import WEBHOOK_PATH, bot_id, bot_secret, check_pool, path_bot, token_pool, webhook_path
from core.settings import Settings, TelegramSettings

A, B, C = "7000000001:AAA-one", "7000000002:BBB-two", "7000000003:CCC-three"


def test_a_bots_id_is_the_number_before_the_colon() -> None:
    assert bot_id(A) == 7000000001
    assert bot_id(" 42:x ") == 42
    for bad in ("", "abc:def", "123", "123:", ":abc", "12a:xyz"):
        with pytest.raises(ValueError, match="123456789:ABC"):
            bot_id(bad)


def test_the_pool_is_tokens_else_the_one_token_the_primary_first_without_repeats() -> None:
    assert token_pool("", []) == []
    assert token_pool(A, []) == [A]
    assert token_pool("", [A, B]) == [A, B]
    assert token_pool(B, [A, B, C, A]) == [B, A, C]  # the explicit token is the primary
    assert check_pool([A, B, C]) == [7000000001, 7000000002, 7000000003]
    with pytest.raises(ValueError, match="same bot"):
        check_pool([A, "7000000001:other-secret"])


def test_webhook_paths_the_primarys_as_in_the_contract_and_one_per_bot() -> None:
    assert webhook_path() == WEBHOOK_PATH == "/telegram/webhook"
    assert webhook_path(7000000002) == "/telegram/webhook/7000000002"
    assert path_bot("/telegram/webhook") is None
    assert path_bot("/telegram/webhook/7000000002") == 7000000002
    for other in (
        "/telegram/webhook/",
        "/telegram/webhook/abc",
        "/telegram/webhooks",
        "/healthz",
        "/telegram/webhook/1/2",
    ):
        assert path_bot(other) is False


def test_each_bot_has_its_own_secret_derived_from_the_one_stored() -> None:
    one, two = bot_secret("s3cret", 1), bot_secret("s3cret", 2)
    assert one != two and one == bot_secret("s3cret", 1)  # deterministic: every replica agrees
    assert one != bot_secret("other", 1)
    assert len(one) == 64 and set(one) <= set("0123456789abcdef")  # Telegram's alphabet, ≤ 256
    assert "s3cret" not in one
    with pytest.raises(ValueError):
        bot_secret("", 1)


def test_settings_tokens_from_csv_or_json_and_the_token_defaults_to_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ARBFLOW_TELEGRAM__TOKENS", f"{A}, {B}")
    tg = Settings().telegram
    assert tg.tokens == [A, B] and tg.token == A and tg.pool == [A, B]
    assert tg.bot_ids == [7000000001, 7000000002]
    monkeypatch.setenv("ARBFLOW_TELEGRAM__TOKENS", f'["{B}", "{C}"]')
    monkeypatch.setenv("ARBFLOW_TELEGRAM__TOKEN", A)
    tg = Settings().telegram
    assert tg.token == A and tg.pool == [A, B, C]


def test_one_token_is_a_pool_of_one_and_a_bad_pool_is_refused() -> None:
    tg = TelegramSettings(token=A)
    assert tg.pool == [A] and tg.bot_ids == [7000000001] and tg.tokens == []
    assert TelegramSettings().pool == []
    with pytest.raises(ValueError, match="123456789:ABC"):
        TelegramSettings(tokens=["not-a-token"])
    with pytest.raises(ValueError, match="same bot"):
        TelegramSettings(tokens=[A, "7000000001:again"])


def test_a_bots_token_in_the_pool_else_the_primarys() -> None:
    from core.bots import token_of

    assert token_of([A, B, C], 7000000002) == B
    assert token_of([A, B, C], None) == A
    assert token_of([A, B], 7000000003) == A  # a bot no longer in the pool
    assert token_of([], 1) == ""
