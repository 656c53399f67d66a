"""Flood-limit arithmetic with an injected clock: milliseconds, no sleeping."""

from __future__ import annotations

import itertools
import random

import pytest

from core.flood import PAID_BROADCAST_RATE, ClockOffset, DepartureWindow, FloodLimits, TokenBucket


def test_bucket_starts_full_and_refills_at_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.try_take(10.0)[0] for _ in range(3)] == [True, True, True]
    ok, wait = bucket.try_take(10.0)
    assert not ok and wait == pytest.approx(0.5)
    assert bucket.try_take(10.49) == (False, pytest.approx(0.01))
    assert bucket.try_take(10.5) == (True, 0.0)
    # never more than burst, however long we wait
    assert bucket.available(1000.0) == 3.0


def test_bucket_refusal_takes_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1)
    assert bucket.try_take(0.0)[0]
    for t in (0.1, 0.2, 0.3):
        assert not bucket.try_take(t)[0]
    assert bucket.try_take(1.0)[0]


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0.5)


def test_paid_broadcast_raises_the_global_rate() -> None:
    assert FloodLimits.telegram().global_rate == 30
    assert FloodLimits.telegram(paid_broadcast=True).global_rate == PAID_BROADCAST_RATE
    assert FloodLimits.telegram(paid_broadcast=True, global_rate=400).global_rate == 400


def test_a_bucket_of_one_spaces_events_evenly() -> None:
    bucket = TokenBucket(rate=0.5, burst=1)
    times, t = [], 0.0
    for _ in range(4):
        t += bucket.wait(t)
        bucket.take(t)
        times.append(t)
    assert [b - a for a, b in itertools.pairwise(times)] == [2.0, 2.0, 2.0]


def test_a_departure_window_lets_departures_match_the_slots_of_the_last_second() -> None:
    w = DepartureWindow()
    w.note_slots([10.0, 10.1, 10.2])
    assert w.wait_s(10.0) == 0  # on time
    w.depart(10.0)
    assert w.wait_s(10.1) == 0
    w.depart(10.1)
    # three slots of the second before left late and departed together: the next slot's send
    # may not join them in their second
    w2 = DepartureWindow()
    w2.note_slots([9.2, 9.3, 9.4])
    w2.depart(10.25)
    w2.depart(10.25)
    w2.depart(10.25)
    w2.note_slots([10.3])
    assert w2.wait_s(10.3) == pytest.approx(0.95)  # until the bunch leaves the window
    assert w2.wait_s(11.25) == 0  # the 10.3 slot counts for a second


def test_a_departure_window_with_no_slot_in_it_waits_a_whole_window() -> None:
    w = DepartureWindow(window_s=0.5)
    w.note_slots([1.0])
    assert w.wait_s(2.0) == 0.5  # the slot left the window: the sender takes a new one
    w.note_slots([2.0])
    assert w.wait_s(2.0) == 0


def test_a_departure_window_forgets_old_slots_and_departures() -> None:
    w = DepartureWindow()
    w.note_slots(float(i) / 100 for i in range(1000))  # 10 s of slots, 100 a second
    for i in range(1000):
        w.depart(float(i) / 100)
    assert w.slots_in_window(9.995) == 100
    assert len(w.departures) <= 100 and len(w.slots) <= 300  # bounded, not the whole history


def test_clock_offset_keeps_the_sample_with_the_shortest_round_trip() -> None:
    sync = ClockOffset(horizon_s=30.0)
    assert sync.offset() == 0.0
    # the remote clock is 100 s ahead; the first answer waited 40 ms on the way back
    assert sync.note(10.0, 110.001, 10.042) == pytest.approx(100.0 - 0.02, abs=1e-9)
    # a prompt answer (2 ms round trip) is the better estimate ...
    assert sync.note(11.0, 111.001, 11.002) == pytest.approx(100.0, abs=1e-9)
    # ... and a late one (50 ms) does not move it
    assert sync.note(12.0, 112.001, 12.05) == pytest.approx(100.0, abs=1e-9)


def test_clock_offset_forgets_samples_older_than_its_horizon() -> None:
    sync = ClockOffset(horizon_s=5.0)
    sync.note(0.0, 100.0005, 0.001)  # offset 100, 1 ms round trip
    # the remote clock stepped 1 s; once the good old sample is past the horizon, it is followed
    assert sync.note(3.0, 104.01, 3.02) == pytest.approx(100.0, abs=1e-9)
    assert sync.note(6.0, 107.01, 6.02) == pytest.approx(101.0, abs=1e-9)
    assert len(sync.samples) <= 2


def test_clock_offset_equals_the_best_sample_of_its_horizon_and_keeps_few() -> None:
    rng = random.Random(7)
    sync, seen, t = ClockOffset(horizon_s=2.0), [], 0.0
    for _ in range(5_000):
        t += rng.uniform(0.0, 0.01)  # answers are noted as they come
        rtt = rng.uniform(0.0005, 0.05)
        remote = 100.0 + rng.uniform(-0.001, 0.001) + t - rtt / 2
        got = sync.note(t - rtt, remote, t)
        seen.append((t, max(0.0, t - (t - rtt)), remote - ((t - rtt) + t) / 2))
        recent = [s for s in seen if s[0] >= t - 2.0]
        assert got == min(recent, key=lambda s: s[1])[2]  # the oldest of equal round trips
    assert len(sync.samples) < 50  # not the ~400 samples of its horizon


def test_clock_offset_reads_a_negative_round_trip_as_zero() -> None:
    # a local clock stepped back between sending and receiving: the sample is still used
    sync = ClockOffset()
    assert sync.note(5.0, 50.0, 4.9) == pytest.approx(50.0 - 4.95)
    assert sync.samples[0][1] == 0.0


def test_sends_let_go_but_not_written_count_in_the_window() -> None:
    w = DepartureWindow()
    w.note_slots([10.0, 10.01, 10.02])
    for _ in range(3):
        assert w.wait_s(10.03) == 0
        w.leave()
    # three let go, none written yet (a busy loop holds them): a fourth waits for a write
    w.note_slots([10.03])
    assert w.wait_s(10.03) == 0
    w.leave()
    w.note_slots([10.04])
    w.leave()
    assert w.wait_s(10.04) == 1e-3
    for t in (10.06, 10.06, 10.06, 10.06, 10.06):
        w.written(t)  # written together
    assert w.leaving == 0 and len(w.departures) == 5
    assert w.wait_s(10.07) == pytest.approx(0.99)


def test_writes_in_any_window_stay_within_the_slots_however_late_they_go() -> None:
    """A simulated sender: slots at 100/s, each send let go when the window allows, written
    after a delay that varies 0-80 ms (a busy loop); no one-second window of writes holds
    more than the slots of the busiest second."""
    import random

    rng = random.Random(7)
    w = DepartureWindow()
    slots = [i / 100 for i in range(500)]
    w.note_slots(slots)
    pending: list[float] = []  # write times of sends let go
    writes: list[float] = []
    t, i = 0.0, 0
    while i < len(slots) or pending:
        pending.sort()
        while pending and pending[0] <= t:
            writes.append(pending.pop(0))
            w.written(writes[-1])
        if i < len(slots) and slots[i] <= t - 1.0:  # its slot left the window: a new one
            slots[i] = t
            w.note_slots([t])
        if i < len(slots) and slots[i] <= t and w.wait_s(t) == 0:
            w.leave()
            pending.append(t + rng.choice([0.0, 0.0, 0.002, 0.03, 0.08]))
            i += 1
            continue
        t = round(t + 0.001, 6)
    assert len(writes) == 500
    # slots at 100/s: at most 101 in any closed second
    assert max(sum(1 for x in writes if a - 1.0 < x <= a) for a in writes) <= 101
