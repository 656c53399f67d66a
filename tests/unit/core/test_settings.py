from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import DEFAULT_EXCHANGES, Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("ARBFLOW_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_work_without_any_configuration() -> None:
    s = load_settings()
    assert s.redis.url == ""
    assert s.ray.address == ""
    assert s.lake.url == "./var/lake"
    assert s.market.exchanges == DEFAULT_EXCHANGES
    assert "BTC/USDT" in s.market.symbols
    assert s.lake.flush_rows == 100_000
    assert s.lake.flush_bytes == 64 * 1024 * 1024
    assert s.lake.flush_seconds == 10.0
    assert s.telegram.global_rate == 30.0
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8000)


def test_nested_env_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBFLOW_REDIS__URL", "redis://example:6380/1")
    monkeypatch.setenv("ARBFLOW_MARKET__EXCHANGES", "kraken, coinbase")
    monkeypatch.setenv("ARBFLOW_MARKET__SYMBOLS", '["BTC/USDT:USDT"]')
    monkeypatch.setenv("ARBFLOW_SUPERADMIN_IDS", "11,22")
    monkeypatch.setenv("ARBFLOW_FEES", '{"binance": {"spot_taker": 0.00075}}')
    monkeypatch.setenv("ARBFLOW_LAKE__FLUSH_ROWS", "5000")
    s = Settings()
    assert s.redis.url == "redis://example:6380/1"
    assert s.market.exchanges == ["kraken", "coinbase"]
    assert s.market.symbols == ["BTC/USDT:USDT"]
    assert s.superadmin_ids == [11, 22]
    assert s.fees == {"binance": {"spot_taker": 0.00075}}
    assert s.lake.flush_rows == 5000


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ARBFLOW_LAKE__URL=s3://bucket/prefix\nARBFLOW_MARKET__SOURCE=replay\n")
    s = Settings()
    assert s.lake.url == "s3://bucket/prefix"
    assert s.market.source == "replay"


def test_invalid_source_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("ARBFLOW_MARKET__SOURCE", "carrier-pigeon")
    with pytest.raises(ValidationError, match="source"):
        Settings()


# -- hysteresis and liveness of opportunities ----------------------------------------------


def test_close_after_defaults_to_the_poll_interval_when_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import DEFAULT_CLOSE_AFTER_S

    s = load_settings()
    assert s.opportunities.close_after_s is None
    assert s.close_after("live") == DEFAULT_CLOSE_AFTER_S > 0  # websockets: one tick never closes
    assert s.close_after("sim") == DEFAULT_CLOSE_AFTER_S
    monkeypatch.setenv("ARBFLOW_MARKET__WEBSOCKETS", "false")
    monkeypatch.setenv("ARBFLOW_OPPORTUNITIES__FRESHNESS_S", "6")
    polling = load_settings()
    assert polling.close_after("live") == polling.market.poll_interval_s == 5.0
    assert polling.close_after("replay") == DEFAULT_CLOSE_AFTER_S
    monkeypatch.setenv("ARBFLOW_OPPORTUNITIES__CLOSE_AFTER_S", "12.5")
    assert load_settings().close_after("live") == 12.5


def test_polling_slower_than_freshness_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.errors import ConfigError
    from pipeline.sources.factory import validate_source

    monkeypatch.setenv("ARBFLOW_MARKET__WEBSOCKETS", "false")
    s = load_settings()
    (problem,) = s.timing_problems("live")
    assert "POLL_INTERVAL_S=5" in problem and "FRESHNESS_S=2" in problem
    with pytest.raises(ConfigError, match="Raise ARBFLOW_OPPORTUNITIES__FRESHNESS_S"):
        validate_source(s, "live")
    assert s.timing_problems("sim") == []  # the simulator does not poll
    monkeypatch.setenv("ARBFLOW_OPPORTUNITIES__FRESHNESS_S", "5")
    assert load_settings().timing_problems("live") == []
    monkeypatch.setenv("ARBFLOW_MARKET__WEBSOCKETS", "true")
    monkeypatch.setenv("ARBFLOW_OPPORTUNITIES__FRESHNESS_S", "2")
    assert load_settings().timing_problems("live") == []


def test_stale_bounds_per_kind() -> None:
    from pipeline.open_set import DEFAULT_STALE_AFTER_S

    s = load_settings()
    assert s.stale_after() == DEFAULT_STALE_AFTER_S  # what a store built without settings uses
    tuned = Settings(opportunities={"freshness_s": 4.0, "close_after_s": 2.0})
    assert tuned.stale_after()["spot_spread"] == 6.0
    assert tuned.stale_after()["funding_rate"] == 62.0


def test_actor_counts_scale_with_the_cpus_and_settings_override_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: queue shards and coordinator hosts follow the host (1 each on 2 cores, 8 queue
    shards from 16 CPUs on), and a cluster sets any count it wants."""
    from core import settings as mod

    assert [mod.per_cpus(2, most=8, cpus=n) for n in (1, 2, 4, 16, 64)] == [1, 1, 2, 8, 8]
    assert [mod.per_cpus(8, most=4, cpus=n) for n in (2, 8, 16, 64)] == [1, 1, 2, 4]
    monkeypatch.setattr(mod.os, "cpu_count", lambda: 2)
    s = Settings()
    assert s.distribution.shards == 1 and s.opportunities.coordinator_hosts == 1
    assert s.market.coordinator_hosts == 1
    monkeypatch.setattr(mod.os, "cpu_count", lambda: 32)
    s = Settings()
    assert s.distribution.shards == 8 and s.opportunities.coordinator_hosts == 4
    assert s.market.coordinator_hosts == 16
    monkeypatch.setenv("ARBFLOW_DISTRIBUTION__SHARDS", "32")
    monkeypatch.setenv("ARBFLOW_OPPORTUNITIES__COORDINATOR_HOSTS", "6")
    s = load_settings()
    assert s.distribution.shards == 32 and s.opportunities.coordinator_hosts == 6
