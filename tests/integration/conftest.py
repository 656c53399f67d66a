"""Real services for integration tests: a private redis-server and one local Ray per session."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from serve.runtime import EmbeddedRedis, ray_init
from tests.support.cli import DEMO_DURATION_S, DEMO_USERS, run_demo
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


def _fresh_db(server: EmbeddedRedis, who: str) -> str:
    """The URL of a Redis database of its own (1-15, flushed) on the session's server."""
    import redis

    db = next(_next_db, None)
    if db is None:
        pytest.fail(f"{who}: more than 15 users of the session's Redis asked for a database of their own")
    redis.Redis.from_url(server.url, db=db).flushdb()
    return f"redis://{server.host}:{server.port}/{db}"


@pytest.fixture
def isolated_redis_url(redis_server: EmbeddedRedis) -> str:
    """A Redis database of its own (1-15, flushed) for a test that runs `arbflow` itself.

    Commands keep their online state under fixed keys (open opportunities, sessions);
    a second run in the same database would resume the first one's state.
    """
    return _fresh_db(redis_server, "a test")


@pytest.fixture(scope="module")
def module_redis_url(redis_server: EmbeddedRedis) -> str:
    """As ``isolated_redis_url``, for a module-scoped fixture that runs `arbflow` once for its tests."""
    return _fresh_db(redis_server, "a module")


@pytest.fixture(scope="session")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One ``arbflow demo --no-browser`` (25 s of sim market data, 20 simulated users) for the
    session: its output and its base dir (``var/``, ``lake/``). Tests only read what it left:
    ``test_demo`` its report, ``test_notebooks`` a copy of its lake. Returned whatever its exit
    code; each user asserts it (a demo that fails fails every test that reads it)."""
    base = tmp_path_factory.mktemp("demo")
    proc = run_demo(
        base,
        redis_url=_fresh_db(redis_server, "the demo"),
        duration_s=DEMO_DURATION_S,
        users=DEMO_USERS,
        label="demo-test",
        timeout_s=400,
    )
    return proc, base
