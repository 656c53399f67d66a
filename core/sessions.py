"""Sessions: the 7-day opt-in window that gates the bot and the pushes.

Pure: the Redis adapter is ``state.sessions.RedisSessionStore``; the lake rows go out
through the sink as the ``session_events`` dataset (Arrow schema and table in
``state.sessions``: ``SESSION_EVENTS``, ``session_events_table``).

Decisions:

- The session id identifies a session in the lake; it is not a credential (the
  bot authenticates users by their Telegram id).
- One session per user at a time (``/start`` in a group still belongs to the user;
  ``chat_id`` records where it was started).
- ``/start`` with an active session keeps it (and extends it); with none, an expired
  or an ended one it creates a new session (new id from ``secrets``), settings kept.
- ``extend`` only extends an *active* session (an expired one cannot be revived:
  ``/start`` makes a new one). The middleware coalesces extensions (see
  ``state.sessions.SessionCache``), so ``expires_at`` may lag "last interaction + 7 days"
  by up to a minute.
- Lake events (``SessionEventKind``), one row per lifecycle change and none per
  extension (that would be a row per interaction; activity shows in deliveries):
  ``started`` (a user's first session), ``resumed`` (a new session of a returning
  user), ``expired`` (7 days without interaction; its ``ts`` is the expiry time, the
  moment it happened, even when the sweeper finds it later), ``ended`` (``/stop`` or an
  admin; ``reason`` says which), ``blocked`` (the user blocked the bot).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

SESSION_TTL = timedelta(days=7)


class SessionStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    ENDED = "ended"


class EndReason(StrEnum):
    STOP = "stop"
    """The user sent ``/stop``."""
    BLOCKED = "blocked"
    """The user blocked the bot (``my_chat_member`` kicked, or a 403 on send)."""
    EXPIRED = "expired"
    """No interaction for ``SESSION_TTL``; set by the sweeper."""
    ADMIN = "admin"
    FORGOTTEN = "forgotten"
    """The user asked for their data to be deleted (``/forget``)."""


class SessionEventKind(StrEnum):
    STARTED = "started"
    RESUMED = "resumed"
    EXPIRED = "expired"
    ENDED = "ended"
    BLOCKED = "blocked"


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return value.astimezone(UTC)


class Session(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    user_id: int
    chat_id: int
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime
    ended_at: datetime | None = None
    end_reason: EndReason | None = None
    seq: int = 1
    """1 for the user's first session, 2 for the next, … (when the store knows)."""

    @field_validator("created_at", "expires_at", "last_seen_at", "ended_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return _utc(value)


def new_token() -> str:
    """A fresh session id (128 bits from ``secrets``)."""
    return secrets.token_urlsafe(16)


def new_session(user_id: int, chat_id: int, now: datetime, token: str, *, seq: int = 1) -> Session:
    return Session(
        id=token,
        user_id=user_id,
        chat_id=chat_id,
        created_at=now,
        expires_at=now + SESSION_TTL,
        last_seen_at=now,
        seq=seq,
    )


def status(session: Session, now: datetime) -> SessionStatus:
    if session.ended_at is not None:
        return SessionStatus.ENDED
    if now >= session.expires_at:
        return SessionStatus.EXPIRED
    return SessionStatus.ACTIVE


def is_active(session: Session | None, now: datetime) -> bool:
    return session is not None and status(session, now) is SessionStatus.ACTIVE


def extend(session: Session, now: datetime) -> Session:
    """Active for ``SESSION_TTL`` from ``now``; a non-active session is returned unchanged."""
    if status(session, now) is not SessionStatus.ACTIVE:
        return session
    return session.model_copy(update={"expires_at": now + SESSION_TTL, "last_seen_at": now})


def end(session: Session, now: datetime, reason: EndReason) -> Session:
    """Ended at ``now`` (an expired session ends at its expiry, with reason ``expired``)."""
    if session.ended_at is not None:
        return session
    if now >= session.expires_at:
        return session.model_copy(update={"ended_at": session.expires_at, "end_reason": EndReason.EXPIRED})
    return session.model_copy(update={"ended_at": now, "end_reason": reason})


# -- lake events -------------------------------------------------------------------


class SessionEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    ts: datetime
    user_id: int
    event: SessionEventKind
    session_id: str
    chat_id: int
    seq: int
    reason: str | None = None
    session_started_at: datetime
    duration_s: float | None = None
    """Ended, expired and blocked events: how long the session lasted."""

    @field_validator("ts", "session_started_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        out = _utc(value)
        assert out is not None
        return out


_END_EVENTS = {
    EndReason.STOP: SessionEventKind.ENDED,
    EndReason.ADMIN: SessionEventKind.ENDED,
    EndReason.FORGOTTEN: SessionEventKind.ENDED,  # reason "forgotten"
    EndReason.BLOCKED: SessionEventKind.BLOCKED,
    EndReason.EXPIRED: SessionEventKind.EXPIRED,
}


def start_event(session: Session) -> SessionEvent:
    """``started`` for a user's first session, ``resumed`` for a later one."""
    kind = SessionEventKind.STARTED if session.seq <= 1 else SessionEventKind.RESUMED
    return SessionEvent(
        ts=session.created_at,
        user_id=session.user_id,
        event=kind,
        session_id=session.id,
        chat_id=session.chat_id,
        seq=session.seq,
        session_started_at=session.created_at,
    )


def end_event(session: Session) -> SessionEvent:
    """The event of an ended session (``ended``, ``blocked`` or ``expired``)."""
    if session.ended_at is None or session.end_reason is None:
        raise ValueError("end_event needs an ended session")
    return SessionEvent(
        ts=session.ended_at,
        user_id=session.user_id,
        event=_END_EVENTS[session.end_reason],
        session_id=session.id,
        chat_id=session.chat_id,
        seq=session.seq,
        reason=session.end_reason.value,
        session_started_at=session.created_at,
        duration_s=(session.ended_at - session.created_at).total_seconds(),
    )


def start_events(session: Session, created: bool, previous: Session | None = None) -> list[SessionEvent]:
    """Events of a ``/start``: nothing when the session already existed; otherwise the
    previous session's ``expired`` (when the sweeper had not written it yet) and the
    new session's ``started``/``resumed``."""
    if not created:
        return []
    events: list[SessionEvent] = []
    if previous is not None and previous.ended_at is None:
        events.append(end_event(end(previous, session.created_at, EndReason.EXPIRED)))
    events.append(start_event(session))
    return events


SESSION_EVENT_COLUMNS: tuple[str, ...] = (
    "ts",
    "user_id",
    "event",
    "session_id",
    "chat_id",
    "seq",
    "reason",
    "session_started_at",
    "duration_s",
)


def event_rows(events: Iterable[SessionEvent]) -> dict[str, list[Any]]:
    """Columnar rows (``SESSION_EVENT_COLUMNS``) for the ``session_events`` dataset."""
    cols: dict[str, list[Any]] = {name: [] for name in SESSION_EVENT_COLUMNS}
    for ev in events:
        cols["ts"].append(ev.ts)
        cols["user_id"].append(ev.user_id)
        cols["event"].append(ev.event.value)
        cols["session_id"].append(ev.session_id)
        cols["chat_id"].append(ev.chat_id)
        cols["seq"].append(ev.seq)
        cols["reason"].append(ev.reason)
        cols["session_started_at"].append(ev.session_started_at)
        cols["duration_s"].append(ev.duration_s)
    return cols
