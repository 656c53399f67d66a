"""Build the market source a coordinator runs, from the settings."""

from __future__ import annotations

from core.errors import ConfigError
from core.ports import MarketSource
from core.settings import MarketSourceName, Settings

REPLAY_OWNER = "replay"
"""Coordinator key of the replay source: one file is one time-ordered stream, so a
single coordinator replays every exchange in it (splitting it would break its order)."""


def build_source(
    settings: Settings, exchange: str, source: MarketSourceName, *, realtime: bool = True
) -> MarketSource:
    market = settings.market
    if source == "sim":
        from pipeline.sources.sim import SimMarketSource

        return SimMarketSource(
            exchanges=list(market.exchanges),
            symbols=list(market.symbols),
            exchange=exchange,
            seed=market.sim_seed,
            rate=market.sim_rate,
            tick_s=market.sim_tick_s,
            depth=market.order_book_depth,
            realtime=realtime,
        )
    validate_source(settings, source)
    if source == "replay":
        from pipeline.sources.replay import ReplayMarketSource

        assert market.replay_path is not None
        return ReplayMarketSource(
            market.replay_path, speed=market.replay_speed, depth=market.order_book_depth
        )
    if source == "live":
        from pipeline.sources.live import CcxtMarketSource

        return CcxtMarketSource(
            exchange,
            list(market.symbols),
            market,
            fees=settings.fees,
            keys=settings.exchange_keys.get(exchange),
        )
    raise ConfigError(f"unknown market source {source!r}: use live, replay or sim")


def validate_source(settings: Settings, source: MarketSourceName) -> None:
    """Fail early, before any actor starts, on settings the source cannot work with."""
    market = settings.market
    if source == "replay":
        if market.replay_path is None:
            raise ConfigError("the replay source needs ARBFLOW_MARKET__REPLAY_PATH (an NDJSON file)")
        if not market.replay_path.is_file():
            raise ConfigError(f"replay file not found: {market.replay_path}")
    elif source in ("live", "sim"):
        if source == "sim" and market.universe is not None:
            raise ConfigError(
                f"ARBFLOW_MARKET__SYMBOLS={market.symbols[0]} (universe discovery) needs the live "
                "source: name the symbols for the sim source"
            )
        if not market.exchanges:
            raise ConfigError("ARBFLOW_MARKET__EXCHANGES is empty: name at least one ccxt exchange id")
        if not market.symbols:
            raise ConfigError("ARBFLOW_MARKET__SYMBOLS is empty: name at least one unified symbol")
        if source == "live":
            from pipeline.sources.ccxt_rules import validate_exchange_ids

            validate_exchange_ids(list(market.exchanges))
    else:
        raise ConfigError(f"unknown market source {source!r}: use live, replay or sim")
    for problem in settings.timing_problems(source):
        raise ConfigError(problem)


def coordinator_keys(settings: Settings, source: MarketSourceName) -> list[str]:
    """One coordinator per exchange; a replay file has one coordinator of its own."""
    return [REPLAY_OWNER] if source == "replay" else list(settings.market.exchanges)
