"""The distributor: from an opportunity event to the queue shards of exactly the right chats.

``dist:engine`` (one async actor) receives the lifecycle events of the pair
coordinators: ``opened`` and ``closed``, and the ``updated`` events whose ``pushable``
flipped. An opportunity is fanned out when it first is pushable (``opened`` pushable, or
an ``updated`` false→true flip): it evaluates the six
eligibility layers over the whole user directory at once (``core.eligibility``,
``actors.directory``), records a ``skipped`` row with the deciding layer for every user
with a session who is not eligible, sets a *pending* mark per (target, dedup key) for the
eligible ones (a target with a pending mark for the key is not queued again for it), and
fans them out to the queue shards (``actors.queues``) by chat, one call per shard. Public
opportunities (confidence ≥ ``channel_min_confidence``) also go to the configured channels.

Nothing is charged here: the shard starts the cooldown and draws the quota when it
*sends*, and releases the pending mark when an item expires or is dropped; it then tells
the distributor (:meth:`Distributor.note_outcomes`), whose directory re-reads those
targets from Redis.

A ``closed`` event, or an ``updated`` one that stopped being pushable, expires what is
queued for the id, sent only to the shards that hold items for it (the distributor
remembers where it sent each id, a bounded map; an id it does not know, e.g. from before
a restart, goes to every shard). A reopen (``opened`` with ``reopened=true``, within the
lifecycle's cooldown), or a pushable flip back, of an id already fanned out is a
*re-offer*: the id is evaluated again, writes no new ``skipped`` rows, and is queued only
for the eligible targets that hold nothing for it. Whoever got the push is in its cooldown
(the eligibility layer, and the shard refuses to send a (target, dedup key) in cooldown
before Redis knows it), whoever still has the item queued keeps that one (the shard's
(chat, opportunity) dedup), and whoever's delayed item expired at the close (a Free or
Basic user) is queued again, with the tier delay counted from the re-offer. A repeated
``opened``/flip while the id is still live does nothing. The directory is refreshed from
Redis's change streams every second.

A shard that cannot take its batch (restarting, Redis down) keeps it here and it is
retried; the (chat, opportunity) dedup in the shard makes the retry harmless.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa
import redis.asyncio as aioredis

from actors.directory import UserDirectory
from actors.lazy import drain_emitter, emitter_stats, loop_stats, percentiles, stop_task
from actors.personalization import Schedule
from actors.queues import BATCH_SCHEMA, split_by_shard
from actors.queues.base import ASSIGNMENTS_MAX
from core.accounts import tier_policies
from core.eligibility import Decisions, Layer, OpportunityView
from core.experiments import NO_ASSIGNMENT, Assignment, assign
from core.settings import Settings
from pipeline.deliveries import DELIVERIES, DELIVERIES_DATASET, Audience, DeliveryStatus
from state.keys import DEAD_LETTERS_KEY

log = logging.getLogger(__name__)

REFRESH_S = 1.0
GROUPS_EVERY = 30
"""Groups are re-read every this many refreshes."""
PRUNE_EVERY = 10
"""Closed ids past the reopen window are forgotten every this many refreshes."""
RETRY_S = 1.0
RECORDS_MAX = 50_000
"""Opportunity ids remembered (fanned out or not, and where to); the oldest go first."""
MODEL_EVERY = 10
"""The engagement model's version is polled every this many refreshes."""
PENDING_SLACK_MS = 60_000
"""A pending mark outlives its item's stale time by this much (then it lapses by itself)."""


@dataclass(slots=True)
class Seen:
    """What the distributor remembers of one opportunity id."""

    fanned_ms: int | None = None
    """When it was first fanned out; ``None``: not yet (it was never pushable)."""
    live: bool = False
    """Fanned out (or re-offered) and neither closed nor unpushable since."""
    shards: set[int] = field(default_factory=set)
    """The shards that hold (or will get, on a retry) items for it."""
    closed_ms: int | None = None


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _lut(values: Sequence[str]) -> pl.Expr:
    return pl.lit(pl.Series(values, dtype=pl.String))


def _channel_batch(channels: Sequence[str], due_ms: int) -> pa.Table:
    rows = []
    for ref in channels:
        try:
            chat: int | None = int(ref)
            name: str | None = None
        except ValueError:
            chat, name = None, ref
        rows.append(
            {
                "chat": chat,
                "chat_ref": name,
                "user_id": None,
                "audience": Audience.CHANNEL.value,
                "tier": "channel",
                "due_ms": due_ms,
                "silent": False,
            }
        )
    return pa.Table.from_pylist(rows, schema=BATCH_SCHEMA)


class Distributor:
    """Plain async class; ``shards`` are objects with ``enqueue(event, batch)`` and
    ``expire(ids, reason)`` coroutines (the Ray handles, wrapped)."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: aioredis.Redis,
        directory: UserDirectory,
        shards: Sequence[Any],
        emit: Callable[[str, pa.Table], Awaitable[None] | None] | None = None,
        clock: Callable[[], float] = time.time,
        personalize: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.settings = settings
        self.dist = settings.distribution
        self.client = client
        self.directory = directory
        self.shards = list(shards)
        self.emit = emit
        self.clock = clock
        self.policies = tier_policies(self.dist.tiers)
        self.experiments = [e for e in settings.experiments if e.enabled]
        self._assignments: dict[int, Assignment] = {}
        """Users' experiment assignments (their skipped rows name them), a hash away if forgotten."""
        self.pending: deque[tuple[int, dict[str, Any], pa.Table]] = deque()
        """Fan-out batches a shard could not take yet: (shard, event, batch)."""
        self.counts: Counter[str] = Counter()
        self.skips: Counter[str] = Counter()
        self.fanout_ms: deque[float] = deque(maxlen=10_000)
        self.stage_ms: dict[str, deque[float]] = {
            stage: deque(maxlen=10_000) for stage in ("lock", "decide", "marks", "enqueue")
        }
        """Where a fan-out's time goes: waiting for the directory, deciding, the pending marks
        (Redis), the shards taking their parts."""
        self.seen: OrderedDict[str, Seen] = OrderedDict()
        """Per opportunity id: fanned out or not, and to which shards (bounded)."""
        self._fanning: dict[str, asyncio.Event] = {}
        """Fan-outs under way, by id (a close of one of them waits for it)."""
        self.reopen_window_s = float(settings.opportunities.cooldown_s) + 60.0
        """A closed id is remembered this long: the lifecycle reopens an id only within its
        cooldown."""
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self.schedule: Schedule | None = None
        """The engagement model's recompute (``actors.personalization``): ``personalize`` runs
        one (the Ray task), every ``ARBFLOW_PERSONALIZATION__INTERVAL_S``; none when off."""
        if personalize is not None and settings.personalization.enabled:
            self.schedule = Schedule(settings, personalize, self.reload_model)

    async def start(self) -> int:
        loaded = await self.directory.load()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._refresh_loop()), loop.create_task(self._retry_loop())]
        if self.schedule is not None:
            self.schedule.start()
        return loaded

    async def stop(self) -> None:
        if self.schedule is not None:
            await self.schedule.stop()
        for task in self._tasks:
            await stop_task(task)
        self._tasks = []
        await drain_emitter(self.emit)

    # -- events -----------------------------------------------------------------------------
    async def on_events(self, events: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Lifecycle events from a pair coordinator (``event``: opened/updated/closed).

        What to do with each event is decided before the first ``await``: calls to this
        async actor interleave, and a close handled while its opening is still being
        fanned out waits for that fan-out (so it reaches the shards that just got items)."""
        out: Counter[str] = Counter()
        now_ms = int(self.clock() * 1000)
        expiring: dict[str, list[str]] = {}
        fanning: list[tuple[Mapping[str, Any], asyncio.Event]] = []
        for event in events:
            kind = event.get("event")
            oid = str(event["opportunity_id"])
            if kind == "closed":
                expiring.setdefault("closed", []).append(oid)
                out["closed"] += 1
                continue
            if kind not in ("opened", "updated"):
                continue
            if kind == "updated" and not event.get("pushable"):
                expiring.setdefault("not_pushable", []).append(oid)
                out["unpushable"] += 1
                continue
            seen = self._seen(oid)
            if kind == "opened":
                seen.closed_ms = None
            if not event.get("pushable"):
                continue
            if seen.live:  # a repeated opening or flip of a live id: nothing new
                out["already_fanned_out"] += 1
                self.counts["already_fanned_out"] += 1
                continue
            if seen.fanned_ms is not None:  # it closed or went unpushable since: a re-offer
                event = {**event, "reoffer": True}
            else:
                seen.fanned_ms = now_ms
            seen.live = True
            done = self._fanning[oid] = asyncio.Event()
            fanning.append((event, done))
        if expiring:
            mine = {str(e["opportunity_id"]) for e, _ in fanning}
            await self._expire(expiring, now_ms, wait=lambda oid: oid not in mine)
        for event, done in fanning:
            try:
                out["queued"] += await self.fan_out(event)
            except Exception:  # one bad event never stops the others, nor the coordinator
                self.counts["errors"] += 1
                out["errors"] += 1
                log.exception("distributor: fanning out %s failed", event.get("opportunity_id"))
            finally:
                done.set()
                if self._fanning.get(str(event["opportunity_id"])) is done:
                    del self._fanning[str(event["opportunity_id"])]
        return dict(out)

    def _seen(self, oid: str) -> Seen:
        seen = self.seen.get(oid)
        if seen is None:
            seen = self.seen[oid] = Seen()
            while len(self.seen) > RECORDS_MAX:
                self.seen.popitem(last=False)
        return seen

    def prune(self, now_ms: int | None = None) -> int:
        """Forget ids closed longer ago than the lifecycle could reopen them."""
        now_ms = int(self.clock() * 1000) if now_ms is None else now_ms
        horizon = now_ms - int(self.reopen_window_s * 1000)
        old = [oid for oid, s in self.seen.items() if s.closed_ms is not None and s.closed_ms < horizon]
        for oid in old:
            del self.seen[oid]
        return len(old)

    async def _expire(
        self,
        ids_by_reason: Mapping[str, Sequence[str]],
        now_ms: int,
        wait: Callable[[str], bool] = lambda _oid: True,
    ) -> None:
        """Expire what is queued for these ids, asking only the shards that hold items for
        them; an id this distributor does not know goes to every shard. A fan-out of one of
        them still running (another call) is waited for first."""
        running = [
            self._fanning[oid]
            for ids in ids_by_reason.values()
            for oid in ids
            if oid in self._fanning and wait(oid)
        ]
        for done in running:
            await done.wait()
        calls: dict[tuple[int, str], list[str]] = {}
        dropping: set[str] = set()
        for reason, ids in ids_by_reason.items():
            for oid in ids:
                seen = self.seen.get(oid)
                if seen is None:  # from before this distributor (or its opening is late)
                    targets: Iterable[int] = range(len(self.shards))
                    self.counts["expire_broadcasts"] += 1
                    # remembered as fanned out: a later opening is a re-offer (no skip rows)
                    self._seen(oid).fanned_ms = 0
                    if reason == "closed":
                        self.seen[oid].closed_ms = now_ms
                else:
                    seen.live = False
                    targets, seen.shards = seen.shards, set()
                    if reason == "closed":
                        seen.closed_ms = now_ms
                for i in targets:
                    calls.setdefault((i, reason), []).append(oid)
                dropping.add(oid)
        await self._drop_pending(dropping)
        if not calls:
            return
        keys = list(calls)
        results = await asyncio.gather(
            *(self.shards[i].expire(calls[(i, reason)], reason) for i, reason in keys), return_exceptions=True
        )
        self.counts["expire_calls"] += len(keys)
        for r in results:
            if isinstance(r, BaseException):
                log.warning("distributor: a shard missed a close (its items expire by age): %r", r)

    async def _drop_pending(self, ids: set[str]) -> None:
        """Batches still waiting for a shard, of ids that just closed: never sent, marks released."""
        if not ids or not self.pending:
            return
        keep: deque[tuple[int, dict[str, Any], pa.Table]] = deque()
        for index, event, part in self.pending:
            if str(event["opportunity_id"]) not in ids:
                keep.append((index, event, part))
                continue
            view = OpportunityView.from_event(event)
            targets = _targets(part)
            if targets:
                try:
                    await self.directory.release_pending(view.dedup_key, targets)
                except Exception as exc:  # the marks lapse by themselves
                    log.warning("distributor: cannot release pending marks: %r", exc)
        self.pending = keep

    async def fan_out(self, event: Mapping[str, Any]) -> int:
        """Evaluate one opportunity over every user and queue it for the eligible chats.

        A re-offer (``event["reoffer"]``) writes no ``skipped`` rows and does not look at the
        pending marks: the shards know which chats still hold or got this id, while the
        marks of items that just expired may not be released in Redis yet."""
        t0 = time.perf_counter()
        view = OpportunityView.from_event(event)
        now = datetime.fromtimestamp(self.clock(), UTC)
        reoffer = bool(event.get("reoffer"))
        seen = self._seen(view.opportunity_id)
        if seen.fanned_ms is None:
            seen.fanned_ms = _ms(now)
        seen.live = True
        stages = self.stage_ms
        async with self._lock:
            t1 = time.perf_counter()
            stages["lock"].append((t1 - t0) * 1000)
            decided = await self.directory.decide(view, now)
            eligible = decided.eligible_result()
            t2 = time.perf_counter()
            stages["decide"].append((t2 - t1) * 1000)
            pending = np.empty(0, np.int64) if reoffer else await self.directory.pending(view.dedup_key, now)
            if pending.size and eligible.height:
                held = eligible.get_column("user_id").is_in(pl.Series(pending).implode())
                already = int(held.sum())
                if already:  # an item for the same key is queued for them: not a second one
                    eligible = eligible.filter(~held)
                    self.counts["already_pending"] += already
            if eligible.height:
                until = eligible.get_column("due_at").dt.epoch("ms").to_numpy() + int(
                    self.dist.max_age_s * 1000 + PENDING_SLACK_MS
                )
                await self.directory.mark_pending(
                    view.dedup_key, eligible.get_column("user_id").to_numpy(), until
                )
            stages["marks"].append((time.perf_counter() - t2) * 1000)
        batch = self._batch(eligible, view)
        if self.dist.channels and float(event.get("confidence") or 0) >= self.dist.channel_min_confidence:
            batch = pa.concat_tables([batch, _channel_batch(self.dist.channels, _ms(now))])
        t3 = time.perf_counter()
        queued = await self._enqueue(dict(event), batch, seen)
        stages["enqueue"].append((time.perf_counter() - t3) * 1000)
        if not reoffer:  # after the pushes are on their way: a row per user is the slow part
            self._skipped_rows(decided, view, now)
        self.counts["reoffers" if reoffer else "opportunities"] += 1
        self.counts["eligible"] += eligible.height
        self.fanout_ms.append((time.perf_counter() - t0) * 1000)
        return queued

    async def note_outcomes(self, pairs: Sequence[tuple[int, str]]) -> int:
        """A shard charged (sent) or released (expired, dropped) these (target, dedup key)
        pairs: the directory re-reads their counters, cooldowns and pending marks."""
        async with self._lock:
            n = await self.directory.sync([(int(t), str(k)) for t, k in pairs])
        self.counts["outcomes_synced"] += len(pairs)
        return n

    async def reload_model(self) -> bool:
        """Re-read the engagement model when its version moved (after a run, and polled)."""
        loaded = await self.directory.load_affinities()
        if loaded:
            self.counts["model_loads"] += 1
        return loaded

    async def recompute_model(self) -> dict[str, Any]:
        """Recompute the engagement model now (``arbflow personalize``; the schedule's run)."""
        if self.schedule is None:
            raise RuntimeError("personalization is off (ARBFLOW_PERSONALIZATION__ENABLED=false)")
        return await self.schedule.once()

    def _scores(self, eligible: pl.DataFrame, view: OpportunityView) -> pl.Series:
        """Each eligible row's score (predicted engagement times edge; null: a group, or a user
        without a model), vectorised over the fan-out. It only orders a chat's items."""
        scores = self.directory.scores(eligible.get_column("user_id").to_numpy(), view)
        users = (eligible.get_column("audience").cast(pl.String) == Audience.USER.value).to_numpy()
        scores[~users] = np.nan
        return pl.Series("score", scores, dtype=pl.Float64).fill_nan(None)

    def _batch(self, eligible: pl.DataFrame, view: OpportunityView | None = None) -> pa.Table:
        n = eligible.height
        scored = bool(n) and view is not None and len(self.directory.affinity) > 0
        if scored and view is not None:
            eligible = eligible.with_columns(self._scores(eligible, view))
        frame = eligible.select(
            pl.col("chat_id").cast(pl.Int64).alias("chat"),
            pl.lit(None, pl.String).alias("chat_ref"),
            pl.when(pl.col("audience") == Audience.USER.value)
            .then(pl.col("user_id"))
            .otherwise(None)
            .cast(pl.Int64)
            .alias("user_id"),
            pl.col("audience").cast(pl.String),
            pl.col("tier").cast(pl.String),
            pl.col("due_at").dt.epoch("ms").cast(pl.Int64).alias("due_ms"),
            pl.col("silent").cast(pl.Boolean),
            _lut(self.directory.policy.vocab.timezones).gather(pl.col("tz")).alias("tz"),
            _lut(self.directory.policy.vocab.languages).gather(pl.col("lang")).alias("lang"),
            pl.col("score") if scored else pl.lit(None, pl.Float64).alias("score"),
        )
        table = frame.to_arrow() if n else BATCH_SCHEMA.empty_table()
        return table.cast(BATCH_SCHEMA)

    async def _enqueue(self, event: dict[str, Any], batch: pa.Table, seen: Seen | None = None) -> int:
        if not batch.num_rows:
            return 0
        parts = split_by_shard(batch, len(self.shards))
        if seen is not None:
            seen.shards.update(parts)
        results = await asyncio.gather(
            *(self.shards[i].enqueue(event, part) for i, part in parts.items()), return_exceptions=True
        )
        queued = 0
        for (i, part), r in zip(parts.items(), results, strict=True):
            if isinstance(r, BaseException):
                log.warning("distributor: shard %d cannot take %d chats yet: %r", i, part.num_rows, r)
                self.pending.append((i, event, part))
                self.counts["enqueue_retries"] += 1
            else:
                queued += int(r)
        self.counts["queued"] += queued
        return queued

    def _skipped_rows(self, decided: Decisions, view: OpportunityView, now: datetime) -> None:
        """One ``skipped`` row per target with a session that did not qualify (layer 2-6), but
        for those out of its scope (``core.eligibility.OUT_OF_SCOPE``): every reason counted."""
        for reason, n in decided.reason_counts().items():
            self.skips[reason.value] += n
        if self.emit is None:
            return
        rows = decided.rows_recorded()
        size = rows.size

        if not size:
            return
        skipped = decided.result(rows)
        ts = pa.timestamp("ms", tz="UTC")

        def same(value: Any, type_: pa.DataType) -> pa.Array:  # one value on every row
            return pa.repeat(pa.scalar(value, type_), size)

        given = {
            "queued_at": same(_ms(now), pa.int64()).cast(ts),
            "opportunity_id": same(view.opportunity_id, pa.string()),
            "chat_id": skipped.get_column("chat_id").cast(pl.Int64).to_arrow(),
            "user_id": skipped.get_column("user_id").cast(pl.Int64).to_arrow(),
            "audience": skipped.get_column("audience").cast(pl.String).to_arrow(),
            "status": same(DeliveryStatus.SKIPPED.value, pa.string()),
            "reason": skipped.get_column("reason").cast(pl.String).to_arrow(),
            "layer": skipped.get_column("layer").cast(pl.Int8).to_arrow(),
            "kind": same(str(view.kind), pa.string()),
            "tier": skipped.get_column("tier").cast(pl.String).to_arrow(),
            "priority": same(str(view.priority), pa.string()),
            "net_bps": same(float(view.net_bps), pa.float64()),
            "detected_at": same(_ms(view.detected_at), pa.int64()).cast(ts),
        }
        if self.experiments:  # each user's experiment and variant, as on the shards' rows
            users = skipped.get_column("user_id").to_list()
            audiences = skipped.get_column("audience").cast(pl.String).to_list()
            assigned = [
                self._assignment(u) if a == Audience.USER.value else NO_ASSIGNMENT
                for u, a in zip(users, audiences, strict=True)
            ]
            given["experiment"] = pa.array([x.experiment for x in assigned], pa.string())
            given["variant"] = pa.array([x.variant for x in assigned], pa.string())
        columns = [
            given[f.name].cast(f.type) if f.name in given else pa.nulls(size, f.type) for f in DELIVERIES
        ]
        out = self.emit(DELIVERIES_DATASET, pa.Table.from_arrays(columns, schema=DELIVERIES))
        if asyncio.iscoroutine(out):
            asyncio.get_running_loop().create_task(out)

    def _assignment(self, user_id: int | None) -> Assignment:
        if user_id is None:
            return NO_ASSIGNMENT
        found = self._assignments.get(user_id)
        if found is None:
            if len(self._assignments) >= ASSIGNMENTS_MAX:
                self._assignments.clear()
            found = self._assignments[user_id] = assign(user_id, self.experiments)
        return found

    # -- admin ------------------------------------------------------------------------------
    async def why(self, user_id: int, event: Mapping[str, Any]) -> tuple[int, str]:
        """The layer (0 = eligible) and reason that decide ``user_id`` for this opportunity."""
        view = OpportunityView.from_event(event)
        now = datetime.fromtimestamp(self.clock(), UTC)
        try:
            layer, reason = await self.directory.why(user_id, view, now)
        except KeyError:
            return int(Layer.SESSION), "unknown user"
        return int(layer), str(reason)

    async def forget(self, user_id: int) -> int:
        """``/forget``: the user leaves the directory now (not at the next change-stream read)
        and every shard drops what it holds queued for their chat; returns how many items."""
        async with self._lock:
            self.directory.remove([int(user_id)])
        dropped = await asyncio.gather(*(shard.drop_chat(int(user_id)) for shard in self.shards))
        self.counts["forgotten"] += 1
        return int(sum(dropped))

    def note_blocked(self, chat_ids: Sequence[int]) -> None:
        """A shard saw 403s: those chats get nothing more until they come back."""
        self.directory.note_blocked([int(c) for c in chat_ids])

    async def replay_dead_letters(self, limit: int = 1000) -> int:
        """Put up to ``limit`` dead-lettered notifications back in their queues (attempts reset)."""
        replayed = 0
        while replayed < limit:
            body = await self.client.rpop(DEAD_LETTERS_KEY)
            if body is None:
                break
            record = json.loads(cast(bytes, body))
            item, event = record["item"], record["event"]
            chat = item["chat"]
            batch = pa.Table.from_pylist(
                [
                    {
                        "chat": chat if isinstance(chat, int) else None,
                        "chat_ref": chat if isinstance(chat, str) else None,
                        "user_id": item.get("user_id"),
                        "audience": item["audience"],
                        "tier": item["tier"],
                        "due_ms": int(self.clock() * 1000),
                        "silent": bool(item.get("silent")),
                        "score": item.get("score"),  # a dead letter of an older release: none
                    }
                ],
                schema=BATCH_SCHEMA,
            )
            for i, part in split_by_shard(batch, len(self.shards)).items():
                await self.shards[i].enqueue(event, part, force=True)
            replayed += 1
        self.counts["dead_letters_replayed"] += replayed
        return replayed

    # -- loops --------------------------------------------------------------------------------
    async def _refresh_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(REFRESH_S)
            rounds += 1
            if rounds % PRUNE_EVERY == 0:
                self.prune()
            if rounds % MODEL_EVERY == 0:  # a model written by another run (the CLI's)
                try:
                    await self.reload_model()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.counts["model_load_errors"] += 1
                    log.warning("distributor: cannot read the engagement model (keeping the last): %r", exc)
            try:
                async with self._lock:
                    await self.directory.refresh()
                    if rounds % GROUPS_EVERY == 0:  # groups have no change stream
                        await self.directory.load_groups()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counts["refresh_errors"] += 1
                log.warning("distributor: directory refresh failed (retrying): %r", exc)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_S)
            for _ in range(len(self.pending)):
                index, event, part = self.pending.popleft()
                try:
                    self.counts["queued"] += int(await self.shards[index].enqueue(event, part))
                except asyncio.CancelledError:
                    self.pending.appendleft((index, event, part))
                    raise
                except Exception:
                    self.pending.append((index, event, part))
                    break

    def stats(self) -> dict[str, Any]:
        return {
            **dict(self.counts),
            **emitter_stats(self.emit),
            "skips": dict(self.skips),
            "pending_batches": len(self.pending),
            "remembered_ids": len(self.seen),
            "targets": len(self.directory),
            "fanout_ms": percentiles(self.fanout_ms),
            "personalization": {
                "enabled": self.settings.personalization.enabled,
                "model_version": self.directory.affinity.version,
                "users_with_model": len(self.directory.affinity),
                **(self.schedule.stats() if self.schedule is not None else {}),
            },
            "fanout_stages_ms": {stage: percentiles(ms) for stage, ms in self.stage_ms.items()},
            "loop": loop_stats(),
        }


def _targets(part: pa.Table) -> list[int]:
    """The targets (users, groups) of a fan-out part: who holds a pending mark for it."""
    out = []
    for row in part.select(["chat", "user_id", "audience"]).to_pylist():
        target = {Audience.USER: row["user_id"], Audience.GROUP: row["chat"]}.get(row["audience"])
        if target is not None:
            out.append(int(target))
    return out
