from __future__ import annotations

from datetime import UTC, datetime

from actors.edits import SentPush, SentPushes, moment_ms
from core.models import OpportunityKind, Priority
from core.notifications import Digest, Notification

AT = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
AT_MS = int(AT.timestamp() * 1000)


def note(oid: str) -> Notification:
    return Notification(
        oid, OpportunityKind.SPOT_SPREAD, "BTC/USDT", "binance", "okx", 5.0, 9.0, None, 1000.0, 0.5,
        Priority.HIGH, AT,
    )  # fmt: skip


def push(chat: int, *oids: str) -> SentPush:
    items = tuple(note(o) for o in oids)
    return SentPush(chat, 100 + chat, AT_MS, items, "UTC", False, {o: AT_MS - 42_000 for o in oids})


def test_a_close_marks_every_push_that_showed_it_with_its_lifetime() -> None:
    sent = SentPushes()
    single, digest = push(1, "a"), push(2, "a", "b")
    sent.note(single)
    sent.note(digest)
    assert "a" in sent and sent.notes == 3
    assert sent.close("a", AT_MS) == [single, digest]
    assert single.closed == {"a": 42.0} and digest.closed == {"a": 42.0}
    assert isinstance(digest.payload, Digest) and single.payload == note("a")
    assert sent.close("a", AT_MS) == [] and "a" not in sent  # once
    assert sent.notes == 1  # "b" still held for its own close


def test_notes_are_bounded_oldest_opportunities_first() -> None:
    sent = SentPushes(max_messages=3)
    for i in range(5):
        sent.note(push(i, f"o{i}"))
    assert sent.notes == 3 and list(sent.by_opportunity) == ["o2", "o3", "o4"]


def test_event_times_in_every_shape() -> None:
    assert moment_ms(AT) == AT_MS == moment_ms(AT.isoformat()) == moment_ms(AT_MS)
    assert moment_ms(None) is None and moment_ms("") is None and moment_ms("not a time") is None
    assert moment_ms("2026-12-03T15:00:00") is None  # naive: not trusted


def test_a_chats_last_push_is_recent_within_the_window_until_all_it_shows_closed() -> None:
    from dataclasses import replace

    sent = SentPushes(max_messages=2)
    first = push(1, "a")
    sent.note(first)
    assert sent.recent(1, AT_MS + 1_000, 1_500) is first
    assert sent.recent(1, AT_MS + 2_000, 1_500) is None  # past the window
    assert sent.recent(2, AT_MS, 1_500) is None
    leg = replace(note("b"), buy_exchange="bybit")
    sent.join(first, (leg,), {"b": AT_MS})
    assert [n.opportunity_id for n in first.items] == ["a", "b"] and "b" in sent
    assert isinstance(first.payload, Digest)
    assert sent.close("b", AT_MS + 5_000) == [first] and sent.recent(1, AT_MS, 1_500) is first
    sent.close("a", AT_MS + 5_000)
    assert sent.recent(1, AT_MS, 1_500) is None  # everything it shows closed
    for chat in (2, 3):  # one last push per chat, bounded
        sent.note(push(chat, f"x{chat}"))
    assert list(sent.last_by_chat) == [2, 3]
