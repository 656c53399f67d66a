"""One typed Settings for the whole system (pydantic-settings).

Environment variables use the prefix ``ARBFLOW_`` and ``__`` between nested
sections (``ARBFLOW_REDIS__URL``); a ``.env`` file in the working directory is read
too. Settings are never built at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.bots import bot_id, check_pool, token_pool
from core.experiments import Experiment
from core.universe import universe_size

MarketSourceName = Literal["live", "replay", "sim"]

DEFAULT_CLOSE_AFTER_S = 1.0
"""Hysteresis when the market streams (sim, replay, live websockets): one tick without
an edge does not close an opportunity, a second of them does."""
TECHNICAL_TICK_S = 60.0
"""Technical signals are judged once per closed 1 m bar."""

DEFAULT_EXCHANGES = ["binance", "bybit", "okx"]
DEFAULT_SYMBOLS = [
    "BTC/USDT",
    "ETH/USDT",
    "SOL/USDT",
    "XRP/USDT",
    "DOGE/USDT",
    "BTC/USDT:USDT",
    "ETH/USDT:USDT",
    "SOL/USDT:USDT",
]


DEFAULT_RETENTION: dict[str, float] = {"order_books": 7.0, "quotes": 30.0}
"""Days kept per dataset by default; the others are kept forever."""


def _split_csv(value: Any) -> Any:
    """Accept ``a,b,c`` or a JSON list for list settings given as strings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def per_cpus(cpus_per_one: int, *, most: int, cpus: int | None = None) -> int:
    """A default count of actors that scales with the host: one per ``cpus_per_one`` CPUs,
    at least 1, at most ``most`` (each such actor is a process of 150-350 MB). A setting
    given explicitly overrides it (a cluster sets its own counts)."""
    n = cpus if cpus is not None else (os.cpu_count() or 2)
    return max(1, min(most, n // cpus_per_one))


def default_queue_shards() -> int:
    """``uq:NNN`` actors: one per 2 CPUs, 1 to 8 (1 on a 2-core host)."""
    return per_cpus(2, most=8)


def default_market_hosts() -> int:
    """Processes the market-data coordinators share: one per 2 CPUs, 1-16 (1 on 2 cores:
    the exchanges' coordinators in one process; from as many CPUs as twice the exchanges, a
    process each, ``md:<exchange>``)."""
    return per_cpus(2, most=16)


def default_coordinator_hosts() -> int:
    """Processes hosting the pair coordinators (``coord:<a>:<b>``): one per 8 CPUs, 1 to 4."""
    return per_cpus(8, most=4)


class RaySettings(BaseModel):
    address: str = ""
    """Empty: start a local Ray. ``auto`` or ``ray://host:10001`` joins a cluster."""
    namespace: str = "arbflow"
    include_dashboard: bool = False
    num_cpus: int | None = None


class RedisSettings(BaseModel):
    url: str = ""
    """Empty: spawn a private ``redis-server`` (AOF on) under the data dir."""
    quote_ttl_s: int = 60
    """Latest quotes expire after this many seconds."""


class LakeSettings(BaseModel):
    url: str = "./var/lake"
    """``file://…``, a path, or ``s3://bucket/prefix``."""
    endpoint_url: str = ""
    """S3-compatible endpoint (MinIO, R2, SeaweedFS, moto). Empty: AWS."""
    access_key_id: str = ""
    secret_access_key: str = ""
    region: str = ""
    anonymous: bool = False
    flush_rows: int = 100_000
    flush_bytes: int = 64 * 1024 * 1024
    flush_seconds: float = 10.0
    compression_level: int = 3
    compact_min_files: int = 4
    """A closed hour with at least this many files is compacted into one."""
    sink_buffer_rows: int = Field(default=200_000, ge=0)
    """Rows an actor keeps for the lake sink while it is away (restarting, not started yet)."""
    sink_buffer_s: float = Field(default=300.0, ge=0)
    """How long such rows are kept and retried before they are dropped (and counted)."""

    compact_target_mb: int = 64
    """Compaction merges a closed hour's small files into files of about this size (MiB)."""
    retention: Annotated[dict[str, float], NoDecode] = Field(default_factory=lambda: dict(DEFAULT_RETENTION))
    """Days each dataset is kept (hour partitions older are pruned); a dataset not named, or
    0, is kept forever. ``quotes=30,order_books=7`` or JSON; named datasets override the
    defaults, the others keep theirs."""
    retention_every_s: float = 3600.0
    """How often the sink actor applies the retention while the system runs (0: never)."""
    trace_path: str = ""
    """When set, windowed reads append each day they list and hour partition they read here."""
    duckdb_httpfs: str = ""
    """Path of a DuckDB ``httpfs`` extension file (``httpfs.duckdb_extension``) to load for an
    S3 lake. Empty: the ``httpfs`` installed in DuckDB's extension directory, if any; without
    one DuckDB reads S3 through the registered s3fs filesystem (``pipeline.query``)."""

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                value = json.loads(text)
            else:
                value = {}
                for part in filter(None, (p.strip() for p in text.split(","))):
                    name, sep, days = part.partition("=")
                    if not sep:
                        raise ValueError(f"retention: {part!r} is not dataset=days")
                    value[name.strip()] = days.strip()
        if isinstance(value, dict):
            merged: dict[str, Any] = dict(DEFAULT_RETENTION)
            merged.update(value)
            bad = [k for k, v in merged.items() if v in (None, "") or float(v) < 0]
            if bad:
                raise ValueError(f"retention days must be >= 0 (0 keeps forever): {bad}")
            return {k: float(v) for k, v in merged.items()}
        return value


class MarketSettings(BaseModel):
    source: MarketSourceName | None = None
    """None: ``live`` in both: the demo points it at the exchange emulators it starts (unless
    ``endpoints`` is set), ``arbflow run`` at the exchanges."""
    replay_path: Path | None = None
    replay_speed: float = 0.0
    """0: as fast as possible; 1: real time; 10: ten times real time."""
    exchanges: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_EXCHANGES))
    symbols: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    poll_interval_s: float = 5.0
    order_book_depth: int = 20
    websockets: bool = True
    """Use ccxt.pro websockets where the exchange has them (live source)."""
    coordinator_hosts: int = Field(default_factory=default_market_hosts, ge=0, le=64)
    """Processes the market-data coordinators share. With at least one per exchange (or 0)
    each coordinator is its own actor ``md:<exchange>``; with fewer they live in
    ``md:host:NN`` actors, each exchange in exactly one. Default: one per 2 CPUs, 1-16."""
    request_timeout_ms: int = 10_000
    max_backoff_s: float = 60.0
    breaker_failures: int = 5
    """Consecutive failures that open an exchange's circuit breaker."""
    breaker_reset_s: float = 30.0
    freshness_s: float = 2.0
    """A quote older than this is stale."""
    sim_seed: int = 7
    sim_rate: float = 2_000.0
    """Simulated quote updates per second, per exchange."""
    sim_tick_s: float = 0.1
    redis_flush_s: float = 0.25
    """How often a coordinator writes its latest quotes to Redis."""
    transfer_refresh_s: float = Field(default=300.0, gt=0)
    """How often the live source re-reads deposit/withdraw status and withdrawal fees."""
    universe_refresh_s: float = Field(default=3600.0, gt=0)
    """With ``symbols=top:N``: how often the universe is ranked again (``fetch_tickers``)."""
    universe_equivalent_quotes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """With ``top:N``: quote currencies that count as one when matching markets across
    exchanges (``USDT,USDC,FDUSD``); empty: only identical symbols match."""
    universe_multiplier_bases: bool = False
    """With ``top:N``: whether ``1000PEPE`` and ``PEPE`` are one base when matching."""
    endpoints: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Per exchange, ``{"rest": URL, "ws": URL}``: where ccxt's REST and websocket APIs are
    reached instead (the exchange emulators, a proxy). Each ccxt API URL keeps its host as
    the first path segment: ``https://api.binance.com/api/v3`` -> ``<rest>/api.binance.com/api/v3``."""

    _split = field_validator("exchanges", "symbols", "universe_equivalent_quotes", mode="before")(_split_csv)

    @field_validator("symbols")
    @classmethod
    def _top_n(cls, value: list[str]) -> list[str]:
        universe_size(value)  # ``top:N`` alone, N >= 1
        return value

    @property
    def universe(self) -> int | None:
        """N when ``symbols`` is ``top:N`` (universe discovery), else None."""
        return universe_size(self.symbols)

    @field_validator("endpoints", mode="before")
    @classmethod
    def _endpoints(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if not isinstance(value, dict):
            raise ValueError('endpoints: a JSON object {"<exchange>": {"rest": URL, "ws": URL}}')
        for exchange, urls in value.items():
            if not isinstance(urls, dict) or not set(urls) <= {"rest", "ws"} or not urls:
                raise ValueError(f'endpoints[{exchange!r}]: give "rest" and/or "ws" base URLs')
        return value


class OpportunitySettings(BaseModel):
    """Detection, validation, scoring and coordination of opportunities (issue 3)."""

    notionals: Annotated[list[float], NoDecode] = Field(default_factory=lambda: [1_000.0, 10_000.0])
    """USD notionals each order book is walked for (VWAP fill)."""
    freshness_s: float = 2.0
    """A book older than this (against now and against the other leg) is not used."""
    plausibility_cap: float = 0.10
    """A gross spread above this fraction is a probable ticker collision: flagged, not pushed."""
    min_net_bps: float = 0.0
    """Spot spreads at or below this net edge are not opportunities."""
    funding_notional: float = 10_000.0
    funding_horizon_hours: float = 168.0
    funding_freshness_s: float = 60.0
    funding_use_predicted: bool = False
    """Push on the settled (current) rate by default; True uses the predicted next rate."""
    min_net_apr: float = 0.0
    push_threshold: float = 0.7
    """Only opportunities with confidence at or above this go to distribution."""
    max_volatility_bps: float = 100.0
    """Realised 5-minute volatility above this is out of bounds (lowers confidence, flagged)."""
    material_bps: float = 5.0
    material_size_frac: float = 0.20
    cooldown_s: float = 60.0
    """An opportunity that re-opens within this many seconds is the same opportunity."""
    detect_interval_ms: int = 50
    """Detection runs at most this often on the source clock."""
    technical: bool = True
    technical_timeframes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["1m", "5m"])
    persistence_min_lifetime_s: float = 5.0
    persistence_refresh_s: float = 300.0
    """How often the persistence table is rebuilt from the lake (off the detector's thread)."""
    persistence_window_hours: int = Field(default=24, ge=1)
    """Hour partitions of ``opportunities`` the persistence table is built from (the newest ones)."""
    close_after_s: float | None = Field(default=None, ge=0)
    """Hysteresis: an open opportunity closes only after this long without an edge.
    None: the market's ``poll_interval_s`` when the live source polls (websockets off),
    else :data:`DEFAULT_CLOSE_AFTER_S` (see :meth:`Settings.close_after`)."""
    idle_tick_s: float = Field(default=0.5, gt=0)
    """With no market batch for this long, the detector ticks on its own timer (wall clock),
    so opportunities close when their legs age past the freshness bound."""
    backfill_hours: int = 3
    """Hours of lake quotes the technical bars are rebuilt from at start."""
    coordinator_hosts: int = Field(default_factory=default_coordinator_hosts, ge=1, le=64)
    """Processes (``coord:host:NN``) the pair coordinators share; each pair lives in exactly
    one of them (its one writer). Default: one per 8 CPUs, 1-4."""

    _split = field_validator("notionals", "technical_timeframes", mode="before")(_split_csv)


class TelegramSettings(BaseModel):
    token: str = ""
    """The (primary) bot's token; empty with ``tokens`` set: the first of them."""
    tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """A pool of bots (``ARBFLOW_TELEGRAM__TOKENS``: CSV or a JSON list; docs/bot-pool.md):
    each user is bound to the bot they talk to, pushes go through it, each bot has its own
    rate budget. Empty: the one bot of ``token``."""
    api_base: str = "https://api.telegram.org"
    webhook_secret: str = ""
    global_rate: float = 30.0
    public_url: str = ""
    shard_backlog: int = Field(default=1_000, ge=1)
    """Updates a bot shard holds (answered 200, not yet handled) before it refuses more: the
    webhook then answers 503 and Telegram redelivers later."""

    _split_tokens = field_validator("tokens", mode="before")(_split_csv)

    @model_validator(mode="after")
    def _primary_token(self) -> TelegramSettings:
        if self.tokens:
            check_pool(token_pool(self.token, self.tokens))
            if not self.token:
                self.token = self.tokens[0].strip()
        return self

    @property
    def pool(self) -> list[str]:
        """The bots' tokens, the primary (``token``) first; empty without a token."""
        return token_pool(self.token, self.tokens)

    @property
    def bot_ids(self) -> list[int]:
        """The bots' ids (the number before ``:`` of each token), the primary first."""
        return [bot_id(t) for t in self.pool]


class DistributionSettings(BaseModel):
    """Who gets which opportunity, and how fast (issue 5)."""

    shards: int = Field(default_factory=default_queue_shards, ge=1, le=256)
    """User queue actors (``uq:000`` …); users are sharded by id. Default: one per 2 CPUs, 1-8;
    at start it grows to cover shards that still hold queued pushes in Redis."""
    tiers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-tier overrides of ``core.accounts.DEFAULT_TIERS``: ``{"free": {"daily_quota": 10}}``."""
    prices: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    """Per-tier overrides of ``core.payments.DEFAULT_PRICES`` (Telegram Stars for a period):
    ``{"premium": {"stars": 900, "days": 30}}``; ``{"enterprise": null}`` takes a tier off sale."""
    paid_broadcast: bool = False
    """Telegram's paid broadcast: the global rate may go up to 1000 msg/s."""
    group_multiplier: float = Field(default=2.0, gt=0)
    """A group's quotas are this many times the Free tier's."""
    region_blocks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """ISO country codes whose users get no pushes."""
    channels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Channel chat ids or ``@names`` that get public opportunities."""
    channel_min_confidence: float = 0.8
    """An opportunity is public (goes to the channels) at this confidence or more."""
    max_retries: int = Field(default=5, ge=0)
    """5xx and timeouts are retried this many times, then dead-lettered."""
    retry_base_s: float = Field(default=1.0, gt=0)
    digest_window_s: float = Field(default=2.0, ge=0)
    """Items due for one user within this window go out as one digest message."""
    grouping_window_s: float = Field(default=1.5, ge=0)
    """A leg taken for a chat within this long after a push of its group (the same symbol,
    a shared venue) was sent there joins that push — the message is edited to list every
    leg — instead of being a push of its own; 0 turns it off."""
    group_hold_s: float = Field(default=0.1, ge=0, le=2.0)
    """A new leg of a group (spot spread or funding, two venues) waits this long in its chat's
    queue before its first send, so that the other legs of the same detection — fanned out
    one after another, tens of ms apart — go in the same message instead of editing it (an
    edit costs a Bot API call like a send); 0 sends at once."""
    max_age_s: float = Field(default=300.0, gt=0)
    """A queued item older than this (past its due time) expires unsent."""
    digest_period_s: float | None = Field(default=None, gt=0)
    """Overrides the "missed while delayed" digest cadence (Free daily at the user's hour,
    Basic hourly) with a fixed period from the first missed item: for the demo and tests."""
    missed_keep: int = Field(default=50, ge=1, le=1000)
    """Missed items kept per chat for its digest (the latest)."""
    missed_ttl_s: float = Field(default=3 * 86400.0, gt=0)
    """A chat's missed items expire from Redis this long after the last one was added."""

    _split = field_validator("region_blocks", "channels", mode="before")(_split_csv)

    @field_validator("tiers", "prices", mode="before")
    @classmethod
    def _tiers_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("prices")
    @classmethod
    def _valid_prices(cls, value: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any] | None]:
        from core.payments import tier_prices

        tier_prices(value)  # a bad tier, price or period fails at start, not at the first /subscription
        return value


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000


class OutboundSettings(BaseModel):
    """Outbound webhooks (``ARBFLOW_OUTBOUND__…``, docs/outbound-webhooks.md)."""

    allow_private: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """CIDR ranges an endpoint may resolve to although they are not public (an admin's
    setting for tests: ``127.0.0.0/8,::1/128``); plain ``http`` is accepted only there."""
    min_tier: str = "premium"
    """The lowest tier whose users may register endpoints and get POSTs (admins register for anyone)."""
    max_endpoints: int = Field(default=3, ge=1, le=100)
    """Endpoints one user may have."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    """The whole request (connect, send, answer)."""
    max_attempts: int = Field(default=6, ge=1, le=20)
    """Attempts of one delivery (the first and its retries) before it is a failed delivery."""
    retry_base_s: float = Field(default=2.0, gt=0)
    retry_cap_s: float = Field(default=300.0, gt=0)
    disable_after: int = Field(default=5, ge=1)
    """Consecutive failed deliveries after which an endpoint is disabled (its owner told)."""
    dedup_ttl_s: float = Field(default=7 * 86400.0, gt=0)
    """How long a delivered id is remembered per endpoint (never POSTed again meanwhile)."""
    refresh_s: float = Field(default=3.0, gt=0)
    """How often the queue shards re-read which users have endpoints."""
    concurrency: int = Field(default=64, ge=1)
    """Requests in flight at once in the sender."""

    _split = field_validator("allow_private", mode="before")(_split_csv)

    @field_validator("allow_private")
    @classmethod
    def _valid_ranges(cls, value: list[str]) -> list[str]:
        from core.outbound import parse_ranges

        parse_ranges(value)  # a bad range fails at start
        return value

    @field_validator("min_tier")
    @classmethod
    def _valid_tier(cls, value: str) -> str:
        from core.accounts import Tier

        return Tier(value.strip().lower()).value


class PersonalizationSettings(BaseModel):
    """The engagement model and ranking (``ARBFLOW_PERSONALIZATION__…``, docs/personalization.md)."""

    enabled: bool = True
    """Recompute the model on a schedule and rank each chat's due items by it (off: no model
    is computed or loaded; every item keeps the order of priority, then newest)."""
    interval_s: float = Field(default=900.0, ge=10)
    """How often the model is recomputed from the lake."""
    half_life_days: float = Field(default=14.0, gt=0)
    """An event this old counts half as much as one today (exponential decay)."""
    min_events: int = Field(default=5, ge=1)
    """Pushes seen (and mutes) a user needs in the lake before they get a model; fewer: neutral."""
    prior_events: float = Field(default=5.0, gt=0)
    """Strength of the prior: how many events of the user's own rate a feature's rate starts
    from (a feature seen a few times stays near neutral)."""
    lookback_days: float = Field(default=90.0, gt=0)
    """Only this much of the lake is read (older events weigh little anyway)."""


class ExchangeKey(BaseModel):
    """Read-only exchange API keys of the operator, used only to read currency and network
    status and withdrawal fees (``fetch_currencies`` / ``fetch_deposit_withdraw_fees``).
    Secret: never logged, never written to the lake or Redis."""

    api_key: SecretStr
    secret: SecretStr
    password: SecretStr | None = None
    """The passphrase some exchanges (okx) add."""

    def ccxt_config(self) -> dict[str, str]:
        config = {"apiKey": self.api_key.get_secret_value(), "secret": self.secret.get_secret_value()}
        if self.password is not None:
            config["password"] = self.password.get_secret_value()
        return config


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ARBFLOW_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    data_dir: Path = Path("./var")
    fees: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Taker-fee overrides per exchange: ``{"binance": {"spot_taker": 0.001, "swap_taker": 0.0005}}``."""
    superadmin_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    secret_key: str = ""
    exchange_keys: dict[str, ExchangeKey] = Field(default_factory=dict)
    """Per exchange id (``ARBFLOW_EXCHANGE_KEYS__BINANCE__API_KEY``, ``…__SECRET``,
    ``…__PASSWORD``): read-only keys for transfer status and fees (see ``ExchangeKey``)."""
    log_level: str = "WARNING"
    """Our log level (``ARBFLOW_LOG_LEVEL``: DEBUG, INFO, WARNING, ERROR); libraries stay at WARNING+."""
    experiments: list[Experiment] = Field(default_factory=list)
    """Notification-strategy experiments (``ARBFLOW_EXPERIMENTS``, a JSON list of
    ``{"name": …, "variants": [{"name": "a"}, {"name": "b", "digest_window_s": 30}]}``), in
    priority order; see ``core.experiments`` and docs/experiments.md."""

    ray: RaySettings = Field(default_factory=RaySettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)
    market: MarketSettings = Field(default_factory=MarketSettings)
    opportunities: OpportunitySettings = Field(default_factory=OpportunitySettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    distribution: DistributionSettings = Field(default_factory=DistributionSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)
    personalization: PersonalizationSettings = Field(default_factory=PersonalizationSettings)

    _split = field_validator("superadmin_ids", mode="before")(_split_csv)

    @field_validator("experiments", mode="after")
    @classmethod
    def _experiments_distinct(cls, value: list[Experiment]) -> list[Experiment]:
        names = [e.name for e in value]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names must differ: {names}")
        return value

    @field_validator("fees", mode="before")
    @classmethod
    def _fees_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    # -- liveness of opportunities (docs/opportunities.md "Hysteresis and liveness") ------
    def polls(self, source: MarketSourceName | None = None) -> bool:
        """Whether the market source polls REST (the live source with websockets off)."""
        chosen = source or self.market.source or "live"
        return chosen == "live" and not self.market.websockets

    def close_after(self, source: MarketSourceName | None = None) -> float:
        """The hysteresis in force: the setting, else the poll interval when polling, else 1 s."""
        explicit = self.opportunities.close_after_s
        if explicit is not None:
            return explicit
        return self.market.poll_interval_s if self.polls(source) else DEFAULT_CLOSE_AFTER_S

    def stale_after(self) -> dict[str, float]:
        """Per opportunity kind: how long after it was last seen live an open entry is dead.

        The freshness bound of the kind's data plus the hysteresis: a working detector has
        closed it by then, so a reader that finds one older drops it (the detector or its
        Redis writes are down). Technical signals are judged once per 1 m bar: two bars.
        """
        s = self.opportunities
        close = self.close_after()
        return {
            "spot_spread": s.freshness_s + close,
            "funding_rate": s.funding_freshness_s + close,
            "technical": 2 * TECHNICAL_TICK_S + close,
        }

    def timing_problems(self, source: MarketSourceName | None = None) -> list[str]:
        """Freshness, poll interval and hysteresis checked against each other (at start).

        Rule: when the live source polls REST, every book is as old as the poll interval
        just before the next poll, so the freshness bound must be at least the poll
        interval (else every opportunity closes and re-opens each poll).
        """
        problems = []
        m, s = self.market, self.opportunities
        if self.polls(source) and m.poll_interval_s > s.freshness_s:
            problems.append(
                f"ARBFLOW_MARKET__POLL_INTERVAL_S={m.poll_interval_s:g} is longer than "
                f"ARBFLOW_OPPORTUNITIES__FRESHNESS_S={s.freshness_s:g}: with REST polling every book "
                "goes stale before the next poll and every opportunity would close and re-open each "
                "poll. Raise ARBFLOW_OPPORTUNITIES__FRESHNESS_S to at least the poll interval, "
                "shorten the poll interval, or turn ARBFLOW_MARKET__WEBSOCKETS on."
            )
        return problems


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment, ``.env`` and explicit overrides."""
    return Settings(**overrides)
