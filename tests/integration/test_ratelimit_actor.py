"""The ``ratelimit:global`` actor on a real local Ray: one per namespace, and killing it is harmless."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import ray

from actors.ratelimit import DEFAULT_HEADROOM, RATE_LIMITER_NAME, SEND_LEAD_S, get_rate_limiter
from core.settings import RaySettings, Settings


@pytest.mark.timeout(120)
def test_named_actor_reserves_pauses_and_restarts_conservative(ray_session: None) -> None:
    settings = Settings(ray=RaySettings(namespace="arbflow-test", num_cpus=4))
    limiter = get_rate_limiter(settings)
    assert get_rate_limiter(settings)._actor_id == limiter._actor_id  # get_if_exists
    assert ray.get_actor(RATE_LIMITER_NAME, namespace="arbflow-test")._actor_id == limiter._actor_id
    delays = ray.get(limiter.reserve.remote([(1, False), (2, False), (-5, True)]))
    # the first slot is on the limiter's grid, the lead away or at most one interval after it
    interval = 1 / (30 * DEFAULT_HEADROOM)
    assert len(delays) == 3 and SEND_LEAD_S - 1e-6 <= delays[0] < SEND_LEAD_S + interval + 1e-6
    assert delays == sorted(delays)
    assert ray.get(limiter.pause.remote(2.0, 1)) == "chat"
    stats = ray.get(limiter.stats.remote())
    assert stats["reserved"] == 3 and stats["conservative"] is False and stats["global_rate"] == 30.0

    pid = ray.get(limiter.pid.remote())
    ray.kill(limiter, no_restart=False)
    deadline = time.monotonic() + 60
    while True:  # calls during the restart are retried by Ray (max_task_retries=-1)
        try:
            if ray.get(limiter.pid.remote(), timeout=30) != pid:
                break
        except ray.exceptions.RayActorError:
            pass
        assert time.monotonic() < deadline
    stats = ray.get(limiter.stats.remote())
    assert stats["conservative"] is True and stats["reserved"] == 0
    (first,) = ray.get(limiter.reserve.remote([(3, False)]))
    # buckets assumed drained at the restart: the chat's first slot one chat interval after it
    # (however long this host took to get here), not the lead away
    up = ray.get(limiter.stats.remote())["uptime_s"]
    assert first > 0.05 and first + up >= 1 / 0.97 - 0.01
    ray.kill(limiter, no_restart=True)


@pytest.mark.timeout(120)
def test_a_shard_places_the_limiters_slots_by_its_clock_not_by_when_the_answer_came(
    ray_session: None,
) -> None:
    """A reservation whose answer waited in a busy shard (here 60 ms, more than the 34 ms
    between two slots at 30/s) keeps its slots where the limiter put them: the next
    reservation's slots do not land among them."""
    from actors.queues.actor import ActorLimiter

    settings = Settings(ray=RaySettings(namespace="arbflow-test-clock", num_cpus=4))
    actor = get_rate_limiter(settings)
    interval = 1 / (30 * DEFAULT_HEADROOM)

    async def scenario() -> list[float]:
        limiter = ActorLimiter(actor)
        for _ in range(5):  # prompt answers: the clock offset is known to a millisecond or so
            await limiter.reserve([])
        slots: list[float] = []
        chats = iter(range(1000, 2000))

        async def reserve(n: int, answer_waits_s: float) -> None:
            task = asyncio.get_running_loop().create_task(
                limiter.reserve([(next(chats), False) for _ in range(n)])
            )
            await asyncio.sleep(0)  # the request is out
            time.sleep(answer_waits_s)  # noqa: ASYNC251 - the loop is busy while the answer arrives
            delays = await task
            answered = time.time()
            slots.extend(answered + d for d in delays)

        await reserve(3, 0.06)
        await reserve(3, 0.0)
        return slots

    slots = asyncio.run(scenario())
    assert len(slots) == 6
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) > interval - 0.005, gaps
    ray.kill(actor, no_restart=True)
