"""notify.texts: escaping, splitting at ≤ 4096 without breaking HTML, renderers."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.middlewares import ParsedCommand, parse_command
from core.accounts import DEFAULT_TIERS, Tier, User
from core.candidates import Candidate
from core.lifecycle import OpenOpportunity
from core.models import OpportunityKind, Priority
from notify import texts

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_TAG = re.compile(r"<(/?)([a-z]+)[^>]*>")


def balanced(part: str) -> bool:
    stack: list[str] = []
    for closing, name in _TAG.findall(part):
        if closing:
            if not stack or stack.pop() != name:
                return False
        else:
            stack.append(name)
    return not stack


def strip_tags(s: str) -> str:
    return _TAG.sub("", s)


def test_user_supplied_text_is_escaped() -> None:
    user = User.new(1, NOW, first_name='<script>"x"</script> & co')
    assert texts.display_name(user) == "&lt;script&gt;&quot;x&quot;&lt;/script&gt; &amp; co"
    assert "<b>x</b>" not in texts.broadcast_body("<b>x</b>")
    assert texts.unknown_command("<i>") == "I don't know /&lt;i&gt;. Send /help to see what I can do."


def test_short_text_is_one_part_and_empty_is_none() -> None:
    assert texts.split_message("hi") == ["hi"]
    assert texts.split_message("") == []


def test_split_on_lines_keeps_every_line() -> None:
    lines = [f"<b>{i}</b> " + "x" * 50 for i in range(300)]
    parts = texts.split_message("\n".join(lines))
    assert len(parts) > 1 and all(len(p) <= 4096 for p in parts)
    assert all(balanced(p) for p in parts)
    assert "\n".join(parts).split("\n") == lines  # cut only at line breaks


def test_split_inside_a_long_tag_reopens_it() -> None:
    text = "<b>" + "y" * 9000 + "</b>"
    parts = texts.split_message(text)
    assert len(parts) == 3 and all(
        len(p) <= 4096 and p.startswith("<b>") and p.endswith("</b>") for p in parts
    )
    assert "".join(strip_tags(p) for p in parts) == "y" * 9000


def test_split_never_cuts_an_entity() -> None:
    text = "&amp;" * 2000
    parts = texts.split_message(text, limit=100)
    assert all(re.fullmatch(r"(&amp;)+", p) for p in parts)
    assert "".join(parts) == text


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["", "b", "i", "code"]), st.text(alphabet="ab <>&\"'é😀", max_size=300)),
        max_size=40,
    ),
    st.integers(min_value=64, max_value=500),
)
def test_split_property(chunks: list[tuple[str, str]], limit: int) -> None:
    text = "\n".join(f"<{t}>{texts.esc(s)}</{t}>" if t else texts.esc(s) for t, s in chunks)
    parts = texts.split_message(text, limit=limit)
    assert all(len(p) <= limit for p in parts)
    assert all(balanced(p) for p in parts)

    # nothing visible is lost (line breaks at cuts are dropped, and a part that would be
    # only blanks is not sent: Telegram refuses an empty message)
    def visible(s: str) -> str:
        return "".join(s.split())

    assert visible("".join(strip_tags(p) for p in parts)) == visible(strip_tags(text))


def test_split_rejects_tiny_limits() -> None:
    with pytest.raises(ValueError):
        texts.split_message("x" * 100, limit=10)


def test_opportunity_card_and_list_line() -> None:
    cand = Candidate(
        kind=OpportunityKind.SPOT_SPREAD,
        symbol="BTC/<USDT>",
        buy_exchange="binance",
        sell_exchange="okx",
        gross_bps=30.0,
        net_bps=12.345,
        gross_apr=None,
        notional_usd=10_000.0,
        executable_usd=7_500.0,
        confidence=0.82,
        priority=Priority.HIGH,
        pushable=True,
        flags=(),
        detected_at=NOW,
    )
    opp = OpenOpportunity("id-1", cand, NOW - timedelta(minutes=90), NOW - timedelta(seconds=20))
    card = texts.opportunity_card(opp, NOW)
    assert "BTC/&lt;USDT&gt;" in card and "buy binance → sell okx" in card
    assert "+12.3 bps" in card and "$7,500" in card and "82%" in card and "Open for 1h 30m" in card
    assert balanced(card)
    line = texts.opportunity_line(3, opp)
    assert line.startswith("3. <b>BTC/&lt;USDT&gt;</b> spread")


def test_help_per_tier_and_quota_message() -> None:
    free = texts.help_text(DEFAULT_TIERS[Tier.FREE], has_session=True)
    basic = texts.help_text(DEFAULT_TIERS[Tier.BASIC], has_session=True)
    admin = texts.help_text(DEFAULT_TIERS[Tier.SUPERADMIN], has_session=False)
    assert "/apikeys" not in free and "/apikeys" in basic and "/admin" not in basic and "/admin" in admin
    assert "send /start" in admin
    msg = texts.quota_exhausted(DEFAULT_TIERS[Tier.FREE], NOW, hourly=False)
    assert "00:00 UTC" in msg and "in 12h 0m" in msg
    berlin = texts.quota_exhausted(DEFAULT_TIERS[Tier.FREE], NOW, hourly=False, tz="Europe/Berlin")
    assert "00:00 CET" in berlin and "in 11h 0m" in berlin  # the user's own midnight


def test_parse_command() -> None:
    assert parse_command("/start@Bot camp-1") == ParsedCommand("start", "Bot", "camp-1")
    cmd = parse_command("/MUTE 3")
    assert cmd is not None and (cmd.name, cmd.mention, cmd.args) == ("mute", None, "3")
    assert parse_command("hello") is None and parse_command("/") is None


def test_funding_card_line_and_alert_state_apr_and_the_horizon() -> None:
    from bot.routers.pushes import _alert

    cand = Candidate(
        kind=OpportunityKind.FUNDING_RATE,
        symbol="ETH/USDT:USDT",
        buy_exchange="binance",
        sell_exchange="okx",
        gross_bps=40.0,
        net_bps=30.0,
        gross_apr=0.2086,
        notional_usd=10_000.0,
        executable_usd=10_000.0,
        confidence=0.8,
        priority=Priority.MEDIUM,
        pushable=True,
        flags=(),
        detected_at=NOW,
        details={"net_apr": 0.1564, "horizon_hours": 168.0},
    )
    opp = OpenOpportunity("id-2", cand, NOW, NOW)
    card = texts.opportunity_card(opp, NOW)
    assert "Net: <b>+15.6% APR</b> · +4.3 bps/day" in card
    assert "Total over 168 h: net +30.0 bps (gross +40.0 bps)" in card
    assert texts.opportunity_line(1, opp).endswith("· +15.6% APR")
    assert _alert(opp).endswith("net +15.6% APR")
    signal = replace(cand, kind=OpportunityKind.TECHNICAL, sell_exchange=None)
    tech = OpenOpportunity("id-3", signal, NOW, NOW)
    assert "bps" not in texts.opportunity_line(2, tech) and "net" not in _alert(tech)


def test_backtest_texts_escape_and_say_when_there_is_no_history() -> None:
    from pipeline.backtest import FundingCarryResult, SpotSpreadResult

    end = datetime(2025, 6, 8, tzinfo=UTC)
    carry = FundingCarryResult(
        "<X>/USDT:USDT", "bin&nce", "okx", end - timedelta(days=7), end, 10_000.0, 21, 42,
        0.0021, 0.0126, 105.0, 18.0, 87.0, 0.5, 164.0,
    )  # fmt: skip
    text = texts.backtest_funding(carry, 7)
    assert "&lt;X&gt;/USDT:USDT" in text and "bin&amp;nce" in text and "<X>" not in text
    assert (
        "Net after fees: +$87.00</b> (+50.0% APR)" in text
        and "Fees (open + close both legs): -$18.00" in text
    )
    empty = replace(carry, settlements_long=0, settlements_short=0, earned_usd=0.0, net_usd=-18.0)
    assert texts.BACKTEST_NO_DATA in texts.backtest_funding(empty, 7)
    spot = SpotSpreadResult(
        "A&B/USDT", "binance", "okx", end - timedelta(days=7), end, 5.0, 20.0, 0, 0.0, 0, 0.0,
        None, None, None, None, None,
    )  # fmt: skip
    text = texts.backtest_spot(spot, 7)
    assert "A&amp;B/USDT" in text and texts.BACKTEST_NO_DATA in text
