"""Alert rules: thresholds, hysteresis, one notice per incident, windows, JSON state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.alerts import (
    DELIVERY_SUBJECT,
    AlertKind,
    AlertNotice,
    AlertRules,
    AlertState,
    DeliveryTotals,
    ExchangeReading,
    NoticeEvent,
    StatsSnapshot,
    evaluate,
    open_by_kind,
    window_deltas,
)

T0 = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
RULES = AlertRules(
    stale_after_s=30, max_lag_s=10, max_failure_rate=0.2, min_attempts=10, window_s=60, clear_after_s=20
)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def exchanges(**last: float | None) -> StatsSnapshot:
    """Exchanges whose last batch came at ``T0 + s`` (None: never)."""
    return StatsSnapshot(
        tuple(ExchangeReading(ex, None if s is None else at(s), lag_s=0.5) for ex, s in last.items())
    )


def run(
    steps: list[tuple[float, StatsSnapshot]], rules: AlertRules = RULES, state: AlertState | None = None
) -> tuple[AlertState, list[tuple[float, AlertNotice]]]:
    state = state or AlertState()
    out: list[tuple[float, AlertNotice]] = []
    for t, snap in steps:
        ev = evaluate(snap, state, rules, at(t))
        state = ev.state
        out.extend((t, n) for n in ev.notices)
    return state, out


def test_stale_exchange_opens_once_and_resolves_once_across_many_polls() -> None:
    steps = []
    for t in range(0, 200, 5):  # okx's last batch at 10 s until it comes back at 120 s
        okx = 10.0 if t < 120 else float(t)
        steps.append((float(t), exchanges(binance=float(t), okx=okx)))
    state, notices = run(steps)
    assert [(t, n.event, n.incident.kind, n.incident.subject) for t, n in notices] == [
        (45.0, NoticeEvent.OPENED, AlertKind.STALE_DATA, "okx"),  # age 35 s > 30 s
        (140.0, NoticeEvent.RESOLVED, AlertKind.STALE_DATA, "okx"),  # clear from 120 s, for 20 s
    ]
    opened, resolved = notices[0][1], notices[1][1]
    assert opened.incident.value == pytest.approx(35.0)
    assert resolved.incident.id == opened.incident.id
    assert resolved.incident.peak == pytest.approx(105.0)  # seen at 115 s
    assert resolved.incident.resolved_at == at(140)
    assert state.open == {}


def test_hysteresis_keeps_a_value_hovering_at_the_threshold_one_incident() -> None:
    rules = AlertRules(max_lag_s=10, clear_ratio=0.5, clear_after_s=0)
    lags = [11, 9, 12, 8, 11, 6, 10.5, 5.0]  # dips to 9, 8, 6 stay above 5 (10 * 0.5)
    steps = [(float(i), StatsSnapshot((ExchangeReading("okx", at(i), lag),))) for i, lag in enumerate(lags)]
    _, notices = run(steps, rules)
    assert [(t, n.event) for t, n in notices] == [(0.0, NoticeEvent.OPENED), (7.0, NoticeEvent.RESOLVED)]
    assert notices[1][1].incident.peak == 12


def test_clearing_must_last_clear_after_s_without_interruption() -> None:
    rules = AlertRules(max_lag_s=10, clear_after_s=10)
    lags = {0: 20.0, 5: 1.0, 12: 20.0, 14: 1.0, 20: 1.0, 23: 1.0, 24: 1.0}
    steps = [(float(t), StatsSnapshot((ExchangeReading("okx", at(t), lag),))) for t, lag in lags.items()]
    _, notices = run(steps, rules)
    # clear from 5 s is interrupted at 12 s; clear again from 14 s, for 10 s: 24 s
    assert [(t, n.event) for t, n in notices] == [(0.0, NoticeEvent.OPENED), (24.0, NoticeEvent.RESOLVED)]


def test_an_exchange_that_never_sent_a_batch_is_stale_from_when_it_is_first_watched() -> None:
    state, notices = run(
        [(0.0, exchanges(okx=None)), (25.0, exchanges(okx=None)), (31.0, exchanges(okx=None))]
    )
    assert [(t, n.event) for t, n in notices] == [(31.0, NoticeEvent.OPENED)]
    assert state.first_seen["okx"] == T0


def test_unknown_values_neither_open_nor_clear() -> None:
    rules = AlertRules(max_lag_s=10, clear_after_s=0)
    unknown = StatsSnapshot((ExchangeReading("okx", at(0), lag_s=None),))
    state, notices = run([(0.0, StatsSnapshot((ExchangeReading("okx", at(0), 50.0),)))], rules)
    state, more = run([(1.0, unknown), (2.0, unknown)], rules, state)
    assert [n.event for _, n in notices] == [NoticeEvent.OPENED]
    assert more == []
    assert open_by_kind(state)[AlertKind.INGEST_LAG] == 1


def test_a_finished_replay_is_neither_stale_nor_lagging() -> None:
    done = StatsSnapshot((ExchangeReading("replay", at(0), lag_s=None, done=True),))
    _, notices = run([(0.0, done), (500.0, done)])
    assert notices == []


def deliveries(sent: int, failed: int = 0, throttled: int = 0) -> StatsSnapshot:
    return StatsSnapshot(deliveries=DeliveryTotals(sent, failed, throttled))


def test_failure_rate_over_the_window_needs_enough_attempts() -> None:
    # 3 failures of 4 attempts: 75 %, but fewer than min_attempts (10): no incident
    _, notices = run([(0.0, deliveries(0)), (10.0, deliveries(1, 3))])
    assert notices == []
    # 100 old sends leave the window; then 6 failed of 20 (30 % > 20 %)
    steps = [
        (0.0, deliveries(0)),
        (10.0, deliveries(100)),
        (80.0, deliveries(100)),
        (90.0, deliveries(114, 6)),
    ]
    state, notices = run(steps)
    assert [(t, n.event, n.incident.kind) for t, n in notices] == [
        (90.0, NoticeEvent.OPENED, AlertKind.DELIVERY_FAILURES)
    ]
    assert notices[0][1].incident.value == pytest.approx(0.3)
    assert notices[0][1].incident.subject == DELIVERY_SUBJECT
    # healthy sends dilute the failures under 10 % (0.2 * 0.5) for 20 s: resolved
    steps = [(100.0, deliveries(300, 6)), (110.0, deliveries(400, 6)), (125.0, deliveries(500, 6))]
    _, more = run(steps, state=state)
    assert [(t, n.event) for t, n in more] == [(125.0, NoticeEvent.RESOLVED)]


def test_any_429_in_the_window_is_an_incident_until_the_window_is_clean() -> None:
    steps = [(float(t), deliveries(t, 0, 2 if t >= 10 else 0)) for t in range(0, 200, 5)]
    _, notices = run(steps)
    # two 429s between the polls at 5 s and 10 s; from 70 s the window starts after them
    # (baseline: the sample at 10 s), and clean for 20 s more: resolved at 90 s
    assert [(t, n.event, n.incident.kind) for t, n in notices] == [
        (10.0, NoticeEvent.OPENED, AlertKind.RATE_LIMITED),
        (90.0, NoticeEvent.RESOLVED, AlertKind.RATE_LIMITED),
    ]
    assert notices[0][1].incident.value == 2


def test_totals_that_go_down_are_a_restart_not_a_negative_delta() -> None:
    state, notices = run(
        [(0.0, deliveries(50, 0, 3)), (5.0, deliveries(1, 0, 0)), (10.0, deliveries(2, 0, 0))]
    )
    assert notices == []
    assert window_deltas(state.samples, at(10).timestamp(), 60) == (1, 0, 0)


def test_window_deltas_use_the_newest_sample_before_the_window_as_baseline() -> None:
    samples = [(0.0, 0, 0, 0), (30.0, 10, 1, 0), (70.0, 30, 2, 1), (90.0, 40, 4, 1)]
    assert window_deltas(samples, 100.0, 60.0) == (30, 3, 1)  # baseline at 30 s
    assert window_deltas([], 100.0, 60.0) == (0, 0, 0)


def test_state_round_trips_through_json_so_a_restarted_monitor_does_not_renotify() -> None:
    state, notices = run([(0.0, exchanges(okx=0.0)), (40.0, exchanges(okx=0.0))])
    assert len(notices) == 1
    restored = AlertState.from_json(state.to_json())
    assert restored == state
    _, again = run([(45.0, exchanges(okx=0.0)), (50.0, exchanges(okx=0.0))], state=restored)
    assert again == []
    assert AlertState.from_json(None) == AlertState()
    notice = notices[0][1]
    assert AlertNotice.from_dict(notice.to_dict()) == notice


def test_evaluate_does_not_modify_its_input_state() -> None:
    state = AlertState()
    evaluate(exchanges(okx=0.0), state, RULES, at(100))
    assert state == AlertState()


def test_rules_are_validated_and_naive_datetimes_refused() -> None:
    with pytest.raises(ValueError):
        AlertRules(max_failure_rate=1.5)
    with pytest.raises(ValueError):
        AlertRules(stale_after_s=0)
    with pytest.raises(ValueError):
        evaluate(StatsSnapshot(), AlertState(), RULES, datetime(2026, 1, 1))
