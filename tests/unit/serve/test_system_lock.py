"""One system per data dir: ``<data_dir>/system.lock`` (serve.runtime)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings
from serve.runtime import (
    LOCK_FILE,
    ActorLogForwarder,
    DataDirInUse,
    EmbeddedRedis,
    SystemLock,
    embedded,
    parse_worker_line,
)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_first_process_takes_the_lock_and_a_second_finds_it(tmp_path: Path) -> None:
    first, second = SystemLock(tmp_path), SystemLock(tmp_path)
    assert first.acquire("run") is None
    first.update(redis_url="redis://127.0.0.1:1/0", http_url="http://127.0.0.1:8000")
    owner = second.acquire("run")
    assert owner is not None and owner.pid == os.getpid() and owner.command == "run"
    assert owner.redis_url == "redis://127.0.0.1:1/0"
    second.release()  # not the owner: leaves the lock alone
    assert (tmp_path / LOCK_FILE).exists()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_stale_lock_from_a_dead_pid_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "command": "run", "redis_url": "x"}))
    lock = SystemLock(tmp_path)
    assert lock.read() is None
    assert lock.acquire("run") is None
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_an_unreadable_lock_is_stale(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("{half")
    lock = SystemLock(tmp_path)
    assert lock.acquire("serve") is None
    lock.release()


def _no_redis_server(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: EmbeddedRedis, timeout_s: float = 10.0) -> EmbeddedRedis:
        raise AssertionError("a second redis-server was started on the data dir")

    monkeypatch.setattr(EmbeddedRedis, "start", refuse)


def test_a_second_run_on_the_same_data_dir_refuses_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = SystemLock(tmp_path)
    owner.acquire("run")
    owner.update(redis_url="redis://127.0.0.1:6390/0")
    _no_redis_server(monkeypatch)
    refusal = r"arbflow run \(pid \d+\).*already runs on the data dir"
    with (
        pytest.raises(DataDirInUse, match=refusal),
        embedded(Settings(data_dir=tmp_path), start_ray=False, command="run"),
    ):
        pass
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    owner.release()


def test_serve_attaches_to_the_owners_redis_instead_of_spawning_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = SystemLock(tmp_path)
    owner.acquire("bot")
    owner.update(redis_url="redis://127.0.0.1:6391/0")
    _no_redis_server(monkeypatch)
    with embedded(Settings(data_dir=tmp_path), start_ray=False, command="serve", role="attach") as live:
        assert live.redis.url == "redis://127.0.0.1:6391/0"
    assert (tmp_path / LOCK_FILE).exists()  # still the owner's
    owner.release()


def test_serve_refuses_when_the_owner_serves_http_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = SystemLock(tmp_path)
    owner.acquire("run")
    owner.update(redis_url="redis://127.0.0.1:6392/0", http_url="http://127.0.0.1:8000")
    _no_redis_server(monkeypatch)
    settings = Settings(data_dir=tmp_path)
    with (
        pytest.raises(DataDirInUse, match="serves the webhook, API and dashboard itself"),
        embedded(settings, start_ray=False, command="serve", role="attach", serves_http=True),
    ):
        pass
    owner.release()


def test_the_owner_records_its_redis_and_releases_the_lock_at_exit(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, redis={"url": "redis://127.0.0.1:6393/0"})
    with embedded(settings, start_ray=False, command="run", serves_http=True):
        info = json.loads((tmp_path / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["redis_url"] == "redis://127.0.0.1:6393/0"
        assert info["http_url"] == "http://127.0.0.1:8000"
    assert not (tmp_path / LOCK_FILE).exists()


# -- actors' logs in the command's output --------------------------------------------------

LINE = (
    "2026-12-03 08:00:00,123\tWARNING market_data.py:88 -- binance: feed stalled for 12 s "
    "name=actors.market_data job_id=01000000 worker_id=ab12 node_id=cd34 actor_id=ef56 "
    "task_id=ffff task_name=MarketDataCoordinatorActor.run timestamp_ns=1796284800123000000"
)


def test_a_worker_log_record_is_recognised_by_its_header() -> None:
    assert parse_worker_line(LINE) == (logging.WARNING, "market_data.py:88", LINE.split(" -- ")[1])
    assert parse_worker_line("plain print from an actor") is None


def test_actor_records_at_the_level_reach_the_driver_log_with_the_actor_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    info = LINE.replace("WARNING", "INFO").replace("feed stalled", "quiet")
    error = "2026-12-03 08:00:01,000\tERROR market_data.py:99 -- poll failed"
    tail = "ValueError: bad book name=actors.market_data actor_name=md:okx timestamp_ns=1796284800123000000"
    forward = ActorLogForwarder(logging.WARNING)
    with caplog.at_level(logging.DEBUG, logger="arbflow.actors"):
        forward(
            {
                "actor_name": "MarketDataCoordinatorActor",
                "lines": [
                    info,
                    LINE.replace("task_name", "actor_name=md:binance task_name"),
                    "a print",
                    error,
                    "Traceback (most recent call last):",
                    tail,
                ],
            }
        )
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [
        (logging.WARNING, "(md:binance) actors.market_data: binance: feed stalled for 12 s\na print"),
        (
            logging.ERROR,
            "(md:okx) actors.market_data: poll failed\n"
            "Traceback (most recent call last):\nValueError: bad book",
        ),
    ]


def test_joining_a_cluster_without_a_secret_key_refuses(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, ray={"address": "auto"}, redis={"url": "redis://r:6379/0"})
    with (
        pytest.raises(ConfigError, match="ARBFLOW_SECRET_KEY is not set"),
        embedded(settings, start_ray=False, command="run"),
    ):
        pass
    assert not (tmp_path / LOCK_FILE).exists()
    with embedded(settings.model_copy(update={"secret_key": "k"}), start_ray=False, command="run") as live:
        assert live.ray.address == "auto"
