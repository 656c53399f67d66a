"""The stop sequence of ``arbflow run`` (serve.production): ordered, bounded, reported."""

from __future__ import annotations

import time

from core.settings import Settings
from serve.production import ProductionSystem, StopStep, bot_mode, run_steps


def test_steps_run_in_order_and_a_failing_or_hanging_step_does_not_stop_the_rest() -> None:
    ran: list[str] = []

    def step(name: str, *, fail: bool = False, hang: bool = False) -> StopStep:
        def action() -> str:
            ran.append(name)
            if fail:
                raise RuntimeError("redis went away")
            if hang:
                time.sleep(5)
            return f"{name} done"

        return StopStep(name, action, timeout_s=1.0)

    t0 = time.monotonic()
    outcomes = run_steps([step("intake"), step("drain", fail=True), step("close", hang=True), step("flush")])
    assert time.monotonic() - t0 < 3.0
    assert ran == ["intake", "drain", "close", "flush"]
    assert [(o.name, o.ok) for o in outcomes] == [
        ("intake", True),
        ("drain", False),
        ("close", False),
        ("flush", True),
    ]
    assert outcomes[1].detail == "RuntimeError: redis went away"
    assert outcomes[2].detail.startswith("timed out after 1 s")


def test_the_whole_sequence_is_bounded_by_its_budget() -> None:
    steps = [StopStep(f"s{i}", lambda: time.sleep(3) or "", timeout_s=10.0) for i in range(3)]
    t0 = time.monotonic()
    outcomes = run_steps(steps, budget_s=2.0)
    assert time.monotonic() - t0 < 5.0
    assert not any(o.ok for o in outcomes)


def test_the_stop_order_stops_intake_first_and_closes_the_open_set_before_the_last_flush() -> None:
    names = [s.name for s in ProductionSystem(Settings(), "sim").stop_steps()]
    assert names.index("stop polling") < names.index("stop market data") < names.index("drain detection")
    assert names.index("drain the bot shards") < names.index("drain the push queues to Redis")
    # the open set closes once detection is drained, while the push side still listens (its
    # closes expire what is queued for those opportunities), and the lake is flushed last
    closing = names.index("close the open opportunity set")
    assert names.index("drain detection") < closing < names.index("drain the push queues to Redis")
    assert names[-1] == "flush the lake"


def test_a_system_that_never_started_stops_cleanly() -> None:
    outcomes = ProductionSystem(Settings(), "sim", serve_http=False).stop()
    assert all(o.ok for o in outcomes), outcomes


def test_bot_mode_follows_the_token_and_the_public_url() -> None:
    assert bot_mode(Settings()) == "off"
    assert bot_mode(Settings(telegram={"token": "1:x"})) == "polling"
    assert bot_mode(Settings(telegram={"token": "1:x", "public_url": "https://bot.example.com"})) == "webhook"
