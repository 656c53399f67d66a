"""Schema versions of the lake's datasets, and how readers bring older files to today's shape.

Every dataset has a history of :class:`Change` steps, version 1 first. A file written by
an older release lacks the columns added since (readers give them as null) and carries
renamed columns under their old names (readers map them to the new ones). Files are
stamped with the version that wrote them (Parquet key-value metadata
:data:`VERSION_KEY`, ``"<dataset>@<version>"``) by :class:`pipeline.sink.ParquetSink`;
files without the stamp come from before versioning, i.e. version 1.

Readers never trust a file's schema to be today's: DuckDB views
(:func:`pipeline.query.connect`) read every file by name and union them with an empty
table of :meth:`DatasetVersions.reading_schema`; Polars scans
(:func:`pipeline.query.scan`) pass that schema to ``scan_parquet``; compaction
(:meth:`DatasetVersions.conform`) rewrites old files into today's shape.

Adding a column: append it to the writer's schema and a ``Change(version=N+1,
added=(…))`` here (``tests/unit/pipeline/test_versions.py`` fails on a column no
version accounts for). Renaming one: ``Change(…, renamed=(("old", "new"),))``. Types
may only widen (int32 → int64, float32 → float64, string → large string).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.deliveries import DELIVERIES, ENGAGEMENT
from pipeline.opportunities import OPPORTUNITIES, VALIDATIONS
from pipeline.schemas import DATASET_PATHS, FUNDING_RATES, ORDER_BOOKS, QUOTES, TS

VERSION_KEY = "arbflow.schema"
"""Parquet key-value metadata of every file the sink writes: ``"<dataset>@<version>"``."""

PARTITION_COLUMNS = ("year", "month", "day", "hour")

# The writers' schemas of these three live in state/ (state.sessions.SESSION_EVENTS,
# state.audit.AUDIT, state.payments.PAYMENTS), which pipeline/ must not import; a unit
# test keeps them equal.
SESSION_EVENTS = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("chat_id", pa.int64(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("session_started_at", TS, nullable=False),
        pa.field("duration_s", pa.float64()),
    ]
)
AUDIT = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("actor_id", pa.int64(), nullable=False),
        pa.field("chat_id", pa.int64(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("ok", pa.bool_(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)

PAYMENTS = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("tier", pa.string(), nullable=False),
        pa.field("stars", pa.int64(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("days", pa.int64(), nullable=False),
        pa.field("paid_until", TS),
        pa.field("telegram_payment_charge_id", pa.string(), nullable=False),
        pa.field("provider_payment_charge_id", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True, slots=True)
class Change:
    """One step of a dataset's schema: what version ``version`` changed against the one before."""

    version: int
    note: str
    added: tuple[str, ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()
    """``(old name, new name)`` pairs."""


@dataclass(frozen=True, slots=True)
class DatasetVersions:
    """A dataset's current schema, its time column and the history that led to it."""

    dataset: str
    schema: pa.Schema
    history: tuple[Change, ...]
    first: tuple[str, ...] = ()
    """The columns of version 1 (empty: today's, for a dataset whose history is one version)."""
    time_column: str = "ts"
    symbol_column: str | None = "symbol"
    exchange_columns: tuple[str, ...] = ("exchange",)
    _renames: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        versions = [c.version for c in self.history]
        if not versions or versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"{self.dataset}: versions must run 1, 2, … (got {versions})")
        renames: dict[str, str] = {}
        for change in self.history:
            for old, new in change.renamed:
                for k, v in list(renames.items()):  # a → b then b → c: a → c
                    if v == old:
                        renames[k] = new
                renames[old] = new
        object.__setattr__(self, "_renames", renames)

    @property
    def version(self) -> int:
        return self.history[-1].version

    @property
    def stamp(self) -> str:
        return f"{self.dataset}@{self.version}"

    @property
    def renames(self) -> Mapping[str, str]:
        """Every old name a column ever had → its name today."""
        return dict(self._renames)

    def unaccounted(self) -> list[str]:
        """Columns of today's schema that no version introduces (a column added to a writer's
        schema without a :class:`Change` here); empty when the history is complete."""
        names = list(self.first or self.schema.names)
        for change in self.history[1:]:
            names = [dict(change.renamed).get(n, n) for n in names] + list(change.added)
        return [n for n in self.schema.names if n not in names]

    def reading_schema(self) -> pa.Schema:
        """Today's columns (all nullable: an old file may lack any added one), then each old
        name of a renamed column with its new column's type."""
        fields = [f.with_nullable(True) for f in self.schema]
        for old, new in self._renames.items():
            fields.append(pa.field(old, self.schema.field(new).type, nullable=True))
        return pa.schema(fields)

    def schema_at(self, version: int) -> pa.Schema:
        """The schema files of ``version`` were written with (for fixtures and docs)."""
        if not 1 <= version <= self.version:
            raise ValueError(f"{self.dataset} has versions 1..{self.version}, not {version}")
        fields = list(self.schema)
        for change in reversed(self.history):
            if change.version <= version:
                break
            fields = [f for f in fields if f.name not in change.added]
            back = {new: old for old, new in change.renamed}
            fields = [f.with_name(back[f.name]) if f.name in back else f for f in fields]
        return pa.schema(fields)

    def conform(self, table: pa.Table) -> pa.Table:
        """A table of any version of this dataset in today's schema: renamed columns mapped
        (the new name wins where both hold a value), added ones null, extra ones dropped."""
        columns: dict[str, pa.ChunkedArray] = {}
        for target in self.schema:
            have = target.name in table.column_names
            value = table[target.name] if have else None
            for old, new in self._renames.items():
                if new == target.name and old in table.column_names:
                    older = table[old].cast(target.type)
                    value = older if value is None else pc.coalesce(value.cast(target.type), older)
            if value is None:
                value = pa.chunked_array([pa.nulls(table.num_rows, target.type)])
            columns[target.name] = value.cast(target.type)
        nullable = pa.schema([f.with_nullable(True) for f in self.schema])
        out = pa.Table.from_pydict(columns, schema=nullable)
        try:
            return out.cast(self.schema)
        except (pa.ArrowInvalid, ValueError):  # nulls in a column today's schema forbids
            return out

    # -- reader projections ---------------------------------------------------------
    def polars_schema(self) -> dict[str, pl.DataType]:
        """The reading schema as Polars dtypes (for ``scan_parquet(schema=…)``)."""
        frame = pl.from_arrow(self.reading_schema().empty_table())
        assert isinstance(frame, pl.DataFrame)
        return dict(frame.schema)

    def polars_projection(self, extra: Iterable[str] = PARTITION_COLUMNS) -> list[pl.Expr]:
        """Select today's columns from a scan of :meth:`reading_schema`, mapping old names."""
        out: list[pl.Expr] = []
        for name in self.schema.names:
            olds = [old for old, new in self._renames.items() if new == name]
            expr = (
                pl.coalesce([pl.col(name), *(pl.col(o) for o in olds)]).alias(name) if olds else pl.col(name)
            )
            out.append(expr)
        return [*out, *(pl.col(c) for c in extra)]

    def sql_projection(self, extra: Iterable[str] = PARTITION_COLUMNS) -> str:
        """The DuckDB select list over a union of :meth:`reading_schema` and the files: today's
        columns in order (old names mapped), then any column a newer release added that
        this one does not know, then ``extra`` (the partition columns)."""
        extra = list(extra)
        parts: list[str] = []
        for name in self.schema.names:
            olds = [old for old, new in self._renames.items() if new == name]
            if olds:
                parts.append(f"coalesce({', '.join(_ident(n) for n in [name, *olds])}) AS {_ident(name)}")
            else:
                parts.append(_ident(name))
        known = [*self.schema.names, *self._renames, *extra]
        parts.append(f"* EXCLUDE ({', '.join(_ident(n) for n in known)})")
        parts.extend(_ident(c) for c in extra)
        return ", ".join(parts)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_V1 = (Change(1, "first versioned release"),)

# The columns each dataset had at version 1 (the release that introduced versions). A
# column appended to a writer's schema must come with a Change, or
# ``DatasetVersions.unaccounted`` names it (a unit test checks every dataset).
_FIRST: dict[str, tuple[str, ...]] = {
    "quotes": (
        "ts", "recv_ts", "exchange", "symbol", "market_type", "bid", "ask", "bid_size", "ask_size", "last",
        "base_volume", "quote_volume",
    ),
    "order_books": (
        "ts", "recv_ts", "exchange", "symbol", "market_type", "depth", "bid_px", "bid_sz", "ask_px", "ask_sz",
        "nonce",
    ),
    "funding_rates": (
        "ts", "recv_ts", "exchange", "symbol", "funding_rate", "interval_hours", "rate_per_hour",
        "funding_ts", "next_funding_ts", "next_funding_rate", "mark_price", "index_price",
    ),
    "opportunities": (
        "ts", "opportunity_id", "event", "kind", "symbol", "buy_exchange", "sell_exchange", "gross_bps",
        "net_bps", "gross_apr", "notional_usd", "executable_usd", "confidence", "priority", "pushable",
        "flags", "detected_at", "opened_at", "lifetime_s", "reopened", "details",
    ),
    "validations": (
        "ts", "kind", "symbol", "buy_exchange", "sell_exchange", "stage", "outcome", "reason", "detail",
        "notional_usd", "net_bps", "confidence",
    ),
    "deliveries": (
        "queued_at", "opportunity_id", "chat_id", "chat_ref", "user_id", "audience", "status", "reason",
        "layer", "kind", "tier", "priority", "net_bps", "attempt", "silent", "digest_size", "message_id",
        "detected_at", "due_at", "sent_at", "latency_ms",
    ),
    "engagement": ("ts", "user_id", "chat_id", "action", "opportunity_id", "kind", "detail"),
    "session_events": (
        "ts", "user_id", "event", "session_id", "chat_id", "seq", "reason", "session_started_at",
        "duration_s",
    ),
    "audit": ("ts", "actor_id", "chat_id", "action", "ok", "detail"),
}  # fmt: skip

REGISTRY: dict[str, DatasetVersions] = {
    "quotes": DatasetVersions("quotes", QUOTES, _V1, _FIRST["quotes"]),
    "order_books": DatasetVersions("order_books", ORDER_BOOKS, _V1, _FIRST["order_books"]),
    "funding_rates": DatasetVersions("funding_rates", FUNDING_RATES, _V1, _FIRST["funding_rates"]),
    "opportunities": DatasetVersions(
        "opportunities",
        OPPORTUNITIES,
        _V1,
        _FIRST["opportunities"],
        time_column="detected_at",
        exchange_columns=("buy_exchange", "sell_exchange"),
    ),
    "validations": DatasetVersions(
        "validations",
        VALIDATIONS,
        _V1,
        _FIRST["validations"],
        exchange_columns=("buy_exchange", "sell_exchange"),
    ),
    "deliveries": DatasetVersions(
        "deliveries",
        DELIVERIES,
        (
            *_V1,
            Change(2, "missed while delayed: the lifetime of a missed item", added=("lifetime_s",)),
            Change(
                3,
                "a pool of bots, outbound webhooks and experiments: how, by which bot, in which variant",
                added=("channel", "bot_id", "experiment", "variant"),
            ),
        ),
        _FIRST["deliveries"],
        time_column="queued_at",
        symbol_column=None,
        exchange_columns=(),
    ),
    "engagement": DatasetVersions(
        "engagement", ENGAGEMENT, _V1, _FIRST["engagement"], symbol_column=None, exchange_columns=()
    ),
    "session_events": DatasetVersions(
        "session_events",
        SESSION_EVENTS,
        _V1,
        _FIRST["session_events"],
        symbol_column=None,
        exchange_columns=(),
    ),
    "audit": DatasetVersions("audit", AUDIT, _V1, _FIRST["audit"], symbol_column=None, exchange_columns=()),
    # Stars payments (issue 13): born after versioning, so its first version is today's schema.
    "payments": DatasetVersions(
        "payments",
        PAYMENTS,
        (Change(1, "Telegram Stars payments: paid, refunded, expired"),),
        symbol_column=None,
        exchange_columns=(),
    ),
}
"""Every dataset of ``DATASET_PATHS`` with its version history (issues adding columns append here)."""

assert set(REGISTRY) == set(DATASET_PATHS), "every dataset has a version history"


def versions(dataset: str, registry: Mapping[str, DatasetVersions] | None = None) -> DatasetVersions:
    try:
        return (registry if registry is not None else REGISTRY)[dataset]
    except KeyError:
        raise KeyError(f"unknown dataset {dataset!r}; known: {', '.join(DATASET_PATHS)}") from None


def time_column(dataset: str) -> str:
    """The column whose UTC hour picks a row's partition."""
    entry = REGISTRY.get(dataset)
    return entry.time_column if entry is not None else "ts"
