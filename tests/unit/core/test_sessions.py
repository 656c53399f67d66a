"""Session lifecycle and its lake events (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.sessions import (
    SESSION_EVENT_COLUMNS,
    SESSION_TTL,
    EndReason,
    SessionEventKind,
    SessionStatus,
    end,
    end_event,
    event_rows,
    extend,
    is_active,
    new_session,
    new_token,
    start_events,
    status,
)

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def test_new_session_lasts_seven_days() -> None:
    s = new_session(1, 1, T0, "tok")
    assert timedelta(days=7) == SESSION_TTL
    assert s.expires_at == T0 + SESSION_TTL and s.last_seen_at == T0 and s.created_at == T0
    assert status(s, T0) is SessionStatus.ACTIVE
    assert status(s, T0 + SESSION_TTL - timedelta(milliseconds=1)) is SessionStatus.ACTIVE
    assert status(s, T0 + SESSION_TTL) is SessionStatus.EXPIRED
    assert not is_active(None, T0)


def test_tokens_are_unique_and_long() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000 and all(len(t) >= 22 for t in tokens)


def test_extend_moves_expiry_to_now_plus_ttl() -> None:
    s = new_session(1, 1, T0, "tok")
    later = T0 + timedelta(days=6)
    e = extend(s, later)
    assert e.expires_at == later + SESSION_TTL and e.last_seen_at == later and e.id == s.id
    # an expired session is not revived
    expired_at = T0 + timedelta(days=8)
    assert extend(s, expired_at) == s and status(extend(s, expired_at), expired_at) is SessionStatus.EXPIRED


def test_end_and_status() -> None:
    s = new_session(1, 1, T0, "tok")
    stopped = end(s, T0 + timedelta(hours=1), EndReason.STOP)
    assert status(stopped, T0 + timedelta(hours=1)) is SessionStatus.ENDED
    assert stopped.end_reason is EndReason.STOP and stopped.ended_at == T0 + timedelta(hours=1)
    assert end(stopped, T0 + timedelta(hours=2), EndReason.BLOCKED) == stopped  # ends once
    assert extend(stopped, T0 + timedelta(hours=2)) == stopped
    # stopping an already expired session records the expiry, at its time
    late = end(s, T0 + timedelta(days=9), EndReason.STOP)
    assert late.end_reason is EndReason.EXPIRED and late.ended_at == s.expires_at


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        (EndReason.STOP, SessionEventKind.ENDED),
        (EndReason.ADMIN, SessionEventKind.ENDED),
        (EndReason.BLOCKED, SessionEventKind.BLOCKED),
        (EndReason.EXPIRED, SessionEventKind.EXPIRED),
    ],
)
def test_end_events(reason: EndReason, kind: SessionEventKind) -> None:
    s = new_session(5, -100, T0, "tok", seq=3)
    ev = end_event(end(s, T0 + timedelta(hours=2), reason))
    assert ev.event is kind and ev.reason == reason.value and ev.user_id == 5 and ev.chat_id == -100
    assert ev.duration_s == 7200 and ev.seq == 3 and ev.session_started_at == T0
    with pytest.raises(ValueError):
        end_event(s)


def test_start_events() -> None:
    first = new_session(5, 5, T0, "a")
    assert [e.event for e in start_events(first, True)] == [SessionEventKind.STARTED]
    assert start_events(first, False) == []  # the existing session was kept: nothing to record
    later = T0 + timedelta(days=10)
    second = new_session(5, 5, later, "b", seq=2)
    evs = start_events(second, True, previous=first)  # the sweeper had not seen it yet
    assert [e.event for e in evs] == [SessionEventKind.EXPIRED, SessionEventKind.RESUMED]
    assert evs[0].ts == first.expires_at and evs[0].session_id == "a"
    stopped = end(first, T0 + timedelta(days=1), EndReason.STOP)  # its event was already written
    assert [e.event for e in start_events(second, True, previous=stopped)] == [SessionEventKind.RESUMED]


def test_event_rows_are_columnar() -> None:
    s = new_session(5, 5, T0, "a")
    rows = event_rows([*start_events(s, True), end_event(end(s, T0 + timedelta(minutes=1), EndReason.STOP))])
    assert tuple(rows) == SESSION_EVENT_COLUMNS
    assert rows["event"] == ["started", "ended"] and rows["reason"] == [None, "stop"]
    assert rows["ts"] == [T0, T0 + timedelta(minutes=1)] and rows["duration_s"] == [None, 60.0]
