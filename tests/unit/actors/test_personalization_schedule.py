"""The engagement model's schedule: a first run soon after start, then one per interval; a failed
run is counted and the last model stays; each good run has the directory re-read it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.personalization import Schedule
from core.settings import Settings


async def test_runs_then_reloads_and_survives_a_failure() -> None:
    outcomes: list[Any] = [RuntimeError("lake away"), {"version": 1, "users": 3}, {"version": 2, "users": 4}]
    reloads: list[int] = []

    async def run() -> dict[str, Any]:
        out = outcomes.pop(0) if outcomes else {"version": 9}
        if isinstance(out, Exception):
            raise out
        return dict(out)

    async def after() -> None:
        reloads.append(1)

    settings = Settings(personalization={"interval_s": 10})
    schedule = Schedule(settings, run, after, first_s=0.0)
    schedule.interval_s = 0.01  # the loop's pace, for the test
    schedule.start()
    for _ in range(200):
        if schedule.runs >= 2:
            break
        await asyncio.sleep(0.01)
    await schedule.stop()
    stats = schedule.stats()
    assert stats["errors"] == 1 and stats["runs"] >= 2 and len(reloads) == stats["runs"]
    assert stats["last"]["version"] >= 2 and stats["last_error"] is None
    with pytest.raises(RuntimeError):
        outcomes[:0] = [RuntimeError("again")]
        await schedule.once()
    assert schedule.stats()["last_error"] == "RuntimeError('again')"
