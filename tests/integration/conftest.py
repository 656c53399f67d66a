"""Real services for integration tests: a private redis-server and one local Ray per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from serve.runtime import EmbeddedRedis, ray_init
from tests.support.sandbox_thread import sandbox  # noqa: F401 - the fixture, for every test here


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    settings = Settings(ray={"namespace": "arbflow-test", "num_cpus": 4})
    ray_init(settings)
    yield
    ray.shutdown()


@pytest.fixture
def base_settings(tmp_path: Path, redis_server: EmbeddedRedis) -> Settings:
    """Settings for one test: its own lake and data dir, the session's Redis."""
    return Settings(
        data_dir=tmp_path / "var",
        redis={"url": redis_server.url},
        lake={"url": str(tmp_path / "lake"), "flush_seconds": 0.5},
        ray={"namespace": "arbflow-test", "num_cpus": 4},
        market={"exchanges": ["binance", "bybit", "okx"], "sim_rate": 500, "sim_tick_s": 0.1},
    )


_next_db = iter(range(1, 16))


@pytest.fixture
def isolated_redis_url(redis_server: EmbeddedRedis) -> str:
    """A Redis database of its own (1-15, flushed) for a test that runs `arbflow` itself.

    Commands keep their online state under fixed keys (open opportunities, sessions);
    a second run in the same database would resume the first one's state.
    """
    import redis

    db = next(_next_db, None)
    if db is None:
        pytest.fail("more than 15 tests asked for a Redis database of their own")
    redis.Redis.from_url(redis_server.url, db=db).flushdb()
    return f"redis://{redis_server.host}:{redis_server.port}/{db}"
