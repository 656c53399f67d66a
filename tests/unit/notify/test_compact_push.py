"""The compact layout (an experiment's variant): one line per item, the same buttons, kept
apart from the full push in the render cache, and kept by a sent push's edits."""

from __future__ import annotations

from actors.edits import SentPush
from core.models import OpportunityKind
from core.notifications import Digest, payload_of
from notify import texts
from notify.notifier import render
from tests.unit.notify.test_push_texts import AT, note, plain


def test_one_item_is_one_line() -> None:
    payload = payload_of([note()], layout="compact")
    assert isinstance(payload, Digest) and payload.layout == "compact" and len(payload) == 1
    text = plain(texts.push_compact(payload))
    assert "\n" not in text and "BTC/USDT" in text and "binance" in text and "okx" in text
    assert not text.startswith("1. ")
    full = plain(texts.push_message(note(), now=AT))
    assert len(text) < len(full) / 2 and "Detected" in full and "Detected" not in text


def test_several_items_are_numbered_like_their_buttons() -> None:
    notes = [
        note(oid="a", symbol="BTC/USDT"),
        note(OpportunityKind.FUNDING_RATE, oid="b", symbol="ETH/USDT:USDT"),
    ]
    payload = payload_of(notes, layout="compact")
    assert isinstance(payload, Digest) and payload.layout == "compact"
    text, markup = render(payload, now=AT)
    lines = plain(text).splitlines()
    assert lines[0].startswith("1. ") and lines[1].startswith("2. ") and len(lines) == 3
    assert markup is not None
    data = [b.callback_data for row in markup.inline_keyboard for b in row]
    assert "pu:details:a" in data and "pu:details:b" in data


def test_the_render_cache_keeps_the_layouts_apart() -> None:
    full_text, _ = render(note(), now=AT)
    compact_text, compact_markup = render(payload_of([note()], layout="compact"), now=AT)
    assert full_text != compact_text and "Executable" not in compact_text
    assert compact_markup is not None  # a details button, as on the full push
    assert [b.callback_data for b in compact_markup.inline_keyboard[0]] == [
        f"pu:details:{note().opportunity_id}"
    ]
    assert render(note(), now=AT)[0] == full_text


def test_full_is_the_default_and_edits_keep_the_layout() -> None:
    assert payload_of([note()]) == note()
    push = SentPush(1, 7, 0, (note(),), "UTC", False, {}, layout="compact")
    assert isinstance(push.payload, Digest) and push.payload.layout == "compact"
    text, _ = render(push.payload, now=AT, closed={note().opportunity_id: 12.0})
    assert "Closed after" in plain(text) or "✅" in text
    assert SentPush(1, 7, 0, (note(),), "UTC", False, {}).payload == note()
