"""The ``ratelimit:global`` actor on a real local Ray: one per namespace, and killing it is harmless."""

from __future__ import annotations

import time

import pytest
import ray

from actors.ratelimit import RATE_LIMITER_NAME, get_rate_limiter
from core.settings import RaySettings, Settings


@pytest.mark.timeout(120)
def test_named_actor_reserves_pauses_and_restarts_conservative(ray_session: None) -> None:
    settings = Settings(ray=RaySettings(namespace="arbflow-test", num_cpus=4))
    limiter = get_rate_limiter(settings)
    assert get_rate_limiter(settings)._actor_id == limiter._actor_id  # get_if_exists
    assert ray.get_actor(RATE_LIMITER_NAME, namespace="arbflow-test")._actor_id == limiter._actor_id
    delays = ray.get(limiter.reserve.remote([(1, False), (2, False), (-5, True)]))
    assert len(delays) == 3 and delays[0] < 0.05 and delays == sorted(delays)
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
