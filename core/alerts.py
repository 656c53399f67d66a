"""Alert rules: thresholds, hysteresis and incidents, evaluated on a snapshot of stats.

Four rules (issue 6, "Alerts"):

- ``stale_data`` (per exchange): seconds since its last market-data batch; opens above
  ``stale_after_s``.
- ``ingest_lag`` (per exchange): exchange timestamp → arrival at the last batch (s);
  opens above ``max_lag_s``.
- ``delivery_failures`` (``telegram``): failed / (sent + failed) over ``window_s``; opens
  above ``max_failure_rate`` once the window holds ``min_attempts`` attempts.
- ``rate_limited`` (``telegram``): 429 answers over ``window_s``; opens above
  ``max_throttled`` (0: any 429).
- ``source_down`` (per exchange): seconds its market source has been failing to start
  (an exchange down at start, a mistyped id); opens above ``source_down_after_s`` (0:
  at once) and resolves once the source runs.

An *incident* opens the first time its value crosses the threshold and stays open
while the value stays above ``threshold * clear_ratio`` (hysteresis: a value hovering
around the threshold is one incident, not many). Once the value is at or below that
line for ``clear_after_s`` without interruption, the incident resolves. Exactly one
:class:`AlertNotice` is emitted when an incident opens and one when it resolves:
"once per incident, not per minute". An unknown value (an actor that did not answer)
neither opens nor clears anything.

Delivery counters arrive as running totals; :func:`evaluate` keeps samples of them in
the state to take differences over the window, and treats totals that go down as a
restart (it starts counting again from there).

Pure: data in, decisions out, ``now`` injected. :class:`AlertState` round-trips
through JSON so the caller can keep it in Redis and a restarted monitor neither
forgets an open incident nor announces it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class AlertKind(StrEnum):
    STALE_DATA = "stale_data"
    INGEST_LAG = "ingest_lag"
    DELIVERY_FAILURES = "delivery_failures"
    RATE_LIMITED = "rate_limited"
    SOURCE_DOWN = "source_down"


class NoticeEvent(StrEnum):
    OPENED = "opened"
    RESOLVED = "resolved"


DELIVERY_SUBJECT = "telegram"


@dataclass(frozen=True)
class AlertRules:
    """Thresholds (defaults suit a live feed polled every few seconds)."""

    stale_after_s: float = 30.0
    """An exchange with no market-data batch for longer than this is stale."""
    max_lag_s: float = 10.0
    """Ingest lag (exchange timestamp → arrival) above this is an incident."""
    max_failure_rate: float = 0.2
    """Failed / (sent + failed) deliveries over ``window_s`` above this is an incident..."""
    min_attempts: int = 20
    """...once the window holds at least this many attempts."""
    max_throttled: int = 0
    """Telegram 429 answers allowed within ``window_s``: 0 means any 429 opens an incident."""
    window_s: float = 300.0
    """The window of the delivery rules."""
    clear_ratio: float = 0.5
    """Hysteresis: an incident clears only at or below ``threshold * clear_ratio``."""
    clear_after_s: float = 60.0
    """...and only after staying there this long."""
    source_down_after_s: float = 0.0
    """A market source failing to start for longer than this is an incident (0: at once)."""

    def __post_init__(self) -> None:
        if min(self.stale_after_s, self.max_lag_s, self.window_s) <= 0:
            raise ValueError("stale_after_s, max_lag_s and window_s must be positive")
        if not 0 <= self.max_failure_rate < 1:
            raise ValueError("max_failure_rate must be in [0, 1)")
        if not 0 <= self.clear_ratio <= 1:
            raise ValueError("clear_ratio must be in [0, 1]")
        if self.source_down_after_s < 0:
            raise ValueError("source_down_after_s must be >= 0")
        if self.clear_after_s < 0 or self.max_throttled < 0 or self.min_attempts < 1:
            raise ValueError("clear_after_s and max_throttled must be >= 0, min_attempts >= 1")

    def threshold(self, kind: AlertKind) -> float:
        return {
            AlertKind.STALE_DATA: self.stale_after_s,
            AlertKind.INGEST_LAG: self.max_lag_s,
            AlertKind.DELIVERY_FAILURES: self.max_failure_rate,
            AlertKind.RATE_LIMITED: float(self.max_throttled),
            AlertKind.SOURCE_DOWN: self.source_down_after_s,
        }[kind]


# -- the snapshot ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExchangeReading:
    """What the monitor knows about one market-data coordinator."""

    exchange: str
    last_batch_at: datetime | None = None
    """When its last batch arrived; None: none seen (yet)."""
    lag_s: float | None = None
    """Ingest lag at the last batch; None: unknown (no batch, or the actor did not answer)."""
    done: bool = False
    """A finished source (the end of a replay) is not stale."""
    down_s: float | None = None
    """Seconds its source has been failing to start (0: running); None: unknown."""


@dataclass(frozen=True)
class DeliveryTotals:
    """Running totals across the queue shards (they only go up, except at a restart)."""

    sent: int = 0
    failed: int = 0
    throttled: int = 0


@dataclass(frozen=True)
class StatsSnapshot:
    exchanges: tuple[ExchangeReading, ...] = ()
    deliveries: DeliveryTotals | None = None
    """None: no queue shard answered; the delivery rules keep their state."""


# -- incidents and state ---------------------------------------------------------------------


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


@dataclass
class Incident:
    kind: AlertKind
    subject: str
    opened_at: datetime
    threshold: float
    value: float
    """The value that opened it."""
    peak: float
    last_value: float
    clear_since: datetime | None = None
    resolved_at: datetime | None = None

    @property
    def key(self) -> str:
        return incident_key(self.kind, self.subject)

    @property
    def id(self) -> str:
        return f"{self.key}:{int(self.opened_at.timestamp() * 1000)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "subject": self.subject,
            "opened_at": _iso(self.opened_at),
            "threshold": self.threshold,
            "value": self.value,
            "peak": self.peak,
            "last_value": self.last_value,
            "clear_since": _iso(self.clear_since),
            "resolved_at": _iso(self.resolved_at),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incident:
        opened = _dt(d["opened_at"])
        assert opened is not None
        return cls(
            kind=AlertKind(d["kind"]),
            subject=str(d["subject"]),
            opened_at=opened,
            threshold=float(d["threshold"]),
            value=float(d["value"]),
            peak=float(d["peak"]),
            last_value=float(d["last_value"]),
            clear_since=_dt(d.get("clear_since")),
            resolved_at=_dt(d.get("resolved_at")),
        )


def incident_key(kind: AlertKind, subject: str) -> str:
    return f"{kind.value}:{subject}"


@dataclass(frozen=True)
class AlertNotice:
    """One message to the SuperAdmins: an incident opened or resolved (rendered by ``notify.texts``)."""

    event: NoticeEvent
    incident: Incident
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event.value, "incident": self.incident.to_dict(), "at": _iso(self.at)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertNotice:
        at = _dt(d["at"])
        assert at is not None
        return cls(NoticeEvent(d["event"]), Incident.from_dict(d["incident"]), at)


Sample = tuple[float, int, int, int]
"""(epoch seconds, sent, failed, throttled)."""


@dataclass
class AlertState:
    open: dict[str, Incident] = field(default_factory=dict)
    first_seen: dict[str, datetime] = field(default_factory=dict)
    """When each exchange was first watched (the age of one that never sent a batch)."""
    samples: list[Sample] = field(default_factory=list)

    def copy(self) -> AlertState:
        return AlertState(
            {k: replace(v) for k, v in self.open.items()}, dict(self.first_seen), list(self.samples)
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "open": {k: v.to_dict() for k, v in self.open.items()},
                "first_seen": {k: _iso(v) for k, v in self.first_seen.items()},
                "samples": [list(s) for s in self.samples],
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes | None) -> AlertState:
        if not text:
            return cls()
        d = json.loads(text)
        return cls(
            open={k: Incident.from_dict(v) for k, v in d.get("open", {}).items()},
            first_seen={k: v for k, s in d.get("first_seen", {}).items() if (v := _dt(s)) is not None},
            samples=[(float(s[0]), int(s[1]), int(s[2]), int(s[3])) for s in d.get("samples", [])],
        )


@dataclass(frozen=True)
class Reading:
    """The current value of one rule for one subject (None: unknown)."""

    kind: AlertKind
    subject: str
    value: float | None
    threshold: float


@dataclass
class Evaluation:
    state: AlertState
    notices: list[AlertNotice]
    readings: list[Reading]

    def value(self, kind: AlertKind, subject: str) -> float | None:
        return next((r.value for r in self.readings if r.kind is kind and r.subject == subject), None)


# -- evaluation ------------------------------------------------------------------------------


def data_age_s(reading: ExchangeReading, state: AlertState, now: datetime) -> float | None:
    """Seconds since the exchange's last batch (or since it is watched, if it never sent one)."""
    if reading.done:
        return 0.0
    since = reading.last_batch_at or state.first_seen.get(reading.exchange)
    return None if since is None else max(0.0, (now - since).total_seconds())


def window_deltas(samples: list[Sample], now_s: float, window_s: float) -> tuple[int, int, int]:
    """(sent, failed, throttled) added within the window (the newest sample at or before the
    window's start is the baseline)."""
    if not samples:
        return 0, 0, 0
    start = now_s - window_s
    base = samples[0]
    for s in samples:
        if s[0] <= start:
            base = s
    last = samples[-1]
    return last[1] - base[1], last[2] - base[2], last[3] - base[3]


def _record(samples: list[Sample], totals: DeliveryTotals, now_s: float, window_s: float) -> list[Sample]:
    sample: Sample = (now_s, totals.sent, totals.failed, totals.throttled)
    if samples and any(new < old for new, old in zip(sample[1:], samples[-1][1:], strict=True)):
        samples = []  # the totals went down: a restart; count again from here
    samples = [*samples, sample]
    start = now_s - window_s
    # keep one sample at or before the window's start as the baseline
    while len(samples) > 1 and samples[1][0] <= start:
        samples.pop(0)
    return samples


def _step(
    state: AlertState,
    notices: list[AlertNotice],
    rules: AlertRules,
    kind: AlertKind,
    subject: str,
    value: float | None,
    now: datetime,
    *,
    may_open: bool = True,
) -> None:
    threshold = rules.threshold(kind)
    key = incident_key(kind, subject)
    incident = state.open.get(key)
    if value is None:
        return
    if incident is None:
        if may_open and value > threshold:
            incident = Incident(kind, subject, now, threshold, value, value, value)
            state.open[key] = incident
            notices.append(AlertNotice(NoticeEvent.OPENED, replace(incident), now))
        return
    incident.last_value = value
    incident.peak = max(incident.peak, value)
    if value > threshold * rules.clear_ratio:
        incident.clear_since = None
        return
    if incident.clear_since is None:
        incident.clear_since = now
    if (now - incident.clear_since).total_seconds() >= rules.clear_after_s:
        del state.open[key]
        incident.resolved_at = now
        notices.append(AlertNotice(NoticeEvent.RESOLVED, incident, now))


def evaluate(snapshot: StatsSnapshot, state: AlertState, rules: AlertRules, now: datetime) -> Evaluation:
    """Apply every rule to ``snapshot``; the input state is not modified."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    state = state.copy()
    notices: list[AlertNotice] = []
    readings: list[Reading] = []

    for ex in snapshot.exchanges:
        state.first_seen.setdefault(ex.exchange, now)
        age = data_age_s(ex, state, now)
        readings.append(Reading(AlertKind.STALE_DATA, ex.exchange, age, rules.stale_after_s))
        _step(state, notices, rules, AlertKind.STALE_DATA, ex.exchange, age, now)
        lag = 0.0 if ex.done else ex.lag_s
        readings.append(Reading(AlertKind.INGEST_LAG, ex.exchange, lag, rules.max_lag_s))
        _step(state, notices, rules, AlertKind.INGEST_LAG, ex.exchange, lag, now)
        if ex.down_s is not None:
            readings.append(Reading(AlertKind.SOURCE_DOWN, ex.exchange, ex.down_s, rules.source_down_after_s))
            _step(state, notices, rules, AlertKind.SOURCE_DOWN, ex.exchange, ex.down_s, now)

    if snapshot.deliveries is not None:
        now_s = now.timestamp()
        state.samples = _record(state.samples, snapshot.deliveries, now_s, rules.window_s)
        sent, failed, throttled = window_deltas(state.samples, now_s, rules.window_s)
        attempts = sent + failed
        rate = failed / attempts if attempts else 0.0
        readings.append(Reading(AlertKind.DELIVERY_FAILURES, DELIVERY_SUBJECT, rate, rules.max_failure_rate))
        _step(
            state,
            notices,
            rules,
            AlertKind.DELIVERY_FAILURES,
            DELIVERY_SUBJECT,
            rate,
            now,
            may_open=attempts >= rules.min_attempts,
        )
        readings.append(
            Reading(AlertKind.RATE_LIMITED, DELIVERY_SUBJECT, float(throttled), float(rules.max_throttled))
        )
        _step(state, notices, rules, AlertKind.RATE_LIMITED, DELIVERY_SUBJECT, float(throttled), now)

    return Evaluation(state, notices, readings)


def open_by_kind(state: AlertState) -> dict[AlertKind, int]:
    """Open incidents per kind (every kind present, 0 when none)."""
    out = dict.fromkeys(AlertKind, 0)
    for incident in state.open.values():
        out[incident.kind] += 1
    return out


__all__ = [
    "DELIVERY_SUBJECT",
    "AlertKind",
    "AlertNotice",
    "AlertRules",
    "AlertState",
    "DeliveryTotals",
    "Evaluation",
    "ExchangeReading",
    "Incident",
    "NoticeEvent",
    "Reading",
    "StatsSnapshot",
    "data_age_s",
    "evaluate",
    "incident_key",
    "open_by_kind",
    "window_deltas",
]
