"""The user directory: every push target as one Polars frame, materialised from Redis.

A plain async class (a Ray actor wraps it elsewhere); the rules live in
``core.eligibility``. State that must survive lives in Redis; this is a cache that
:meth:`UserDirectory.load` rebuilds.

How it stays current:

- **Users**: :meth:`refresh` reads ``users:changes`` after the last stream id it saw
  (the id is taken *before* a load, so nothing written during a load is missed) and
  re-reads the changed users in one pipelined round trip per batch, with their session
  expiry and quota counters; ``-`` entries remove the row. Rows are updated in place by
  row index (:func:`apply_row_changes`: a sorted id → row index, ``searchsorted`` and
  one ``scatter`` per column), new rows appended. Every change of the frame goes through
  :meth:`apply_changes` or :meth:`remove`, which keep :attr:`UserDirectory.masks` (the
  filter's per-row state between opportunities, ``core.eligibility.DirectoryMasks``) and
  the rows of the cooldown and pending marks current with it.
- **Sessions** emit no stream entries. Starts and extensions are found by score: every
  session started or extended since the last refresh has an expiry above the previous
  watermark (``ZRANGEBYSCORE``; every 10th refresh also reads every expiry of a session
  written in the last minute — from the expiry a session written a minute ago gets — for
  writes committed out of order and clocks that disagree, which so show within ~10
  refreshes if they are less than ~50 s late; a quiet directory so re-reads nothing).
  Ends (``/stop``, an admin, a 403) leave the expiry set without a trace, so each refresh
  re-checks a rotating slice of the targets the directory believes in session
  (``ZMSCORE``), sized to go round them in about a minute (at least 1,000, at most
  ``session_scan``): a stopped session can so stay "active" here for up to a minute. The
  comparison with the frame is columnar. The queues re-check the session at send time;
  :meth:`note_session_ended` and :meth:`note_blocked` apply what the notifier learns at once.
  Expiry needs nothing: the rule is ``expires <= now``.
- **Quotas**: the counters of ``RedisQuotaStore`` are read at load and for changed
  users. They are a pre-filter: the queue shards draw them in Redis when they send
  (``RedisQuotaStore.try_consume_many``), which stays authoritative. The shards tell
  the distributor which targets they charged or released (:meth:`sync`), and the
  directory then *re-reads* those targets' counters, cooldowns and pending marks from
  Redis: a report lost or repeated changes nothing, Redis is the one truth.
- **Cooldowns** per dedup key: in memory (what :meth:`cooled` answers from) and in
  Redis, one hash per dedup key ``{p}elig:cooldown:{dedup_key}`` (field = target id,
  value = until ms; the key expires with its latest field). A queue shard writes them
  when a push is *sent* (:class:`DeliveryMarks`); :meth:`load` restores them.
- **Pending marks** per dedup key: ``{p}elig:pending:{dedup_key}`` (field = target id,
  value = until ms, the item's due time plus ``max_age_s``, when it would be stale
  anyway). The distributor sets one per target it queues (:meth:`mark_pending`); the
  shard turns it into the cooldown when it sends, or deletes it when the item expires
  or is dropped. A target with a pending mark for a key is not queued again for it.
- **Groups**: the ``RedisGroupStore`` groups, read at load (and by :meth:`load_groups`).
- **The engagement model** (:attr:`UserDirectory.affinity`, ``actors.directory.affinity``): a
  few columns per user read from ``state.personalization`` at load and whenever its version
  moves (:meth:`load_affinities`, polled by the distributor); :meth:`scores` gives the
  predicted engagement times edge of one opportunity over a fan-out. Users without a model (and
  a Redis without one) score NaN: their items keep today's order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import redis.asyncio as aioredis

from actors.directory.affinity import Affinities
from actors.directory.index import _s, apply_row_changes, row_positions
from actors.directory.marks import _SET_UNTIL, MarkStore, cooldown_key, drop_marks, live_marks, pending_key
from core.accounts import User, local_day
from core.eligibility import (
    Decisions,
    DirectoryMasks,
    EligibilityPolicy,
    Layer,
    OpportunityView,
    day_bucket,
    directory_frame,
    empty_directory,
    explain,
    group_row,
    hour_bucket,
    to_ms,
    user_row,
)
from core.settings import Settings
from state.groups import RedisGroupStore
from state.personalization import RedisModelStore
from state.quotas import RedisQuotaStore
from state.redis import redis_errors as _redis_errors
from state.sessions import RedisSessionStore
from state.users import RedisUserStore

SESSION_SKEW_MS, SKEW_EVERY = 60_000, 10
"""Slack of every 10th refresh's read of the expiries (writers' clocks may disagree); the others
read only above the watermark (re-reading a minute of them each second was most of the work)."""
RECHECK_ROUND_S, RECHECK_MIN = 60, 1000
"""The rotating re-check of sessions goes round the targets believed in session in about a
minute of refreshes (at least 1,000 a refresh, at most ``session_scan``)."""
NO_SESSION = -1
"""An expiry that is not there (in the numpy arrays of :meth:`UserDirectory._refresh_sessions`)."""
BATCH = 1000


class UserDirectory:
    """Every push target as a :data:`core.eligibility.DIRECTORY_SCHEMA` frame, kept current."""

    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        *,
        prefix: str = "",
        session_scan: int = 20_000,
    ) -> None:
        self.settings = settings
        self.client = client
        self.prefix = prefix
        self.p = f"{prefix}:" if prefix else ""
        self.policy = EligibilityPolicy.from_settings(settings)
        self.users = RedisUserStore(client, prefix=prefix)
        self.sessions = RedisSessionStore(client, prefix=prefix)
        self.quotas = RedisQuotaStore(client, prefix=prefix)
        self.groups = RedisGroupStore(client, prefix=prefix)
        self.models = RedisModelStore(client, prefix=prefix)
        self.affinity = Affinities()
        """The engagement model's columns (empty: no model, every score NaN)."""
        self.session_scan = session_scan
        self.frame: pl.DataFrame = empty_directory()
        self.masks = DirectoryMasks(self.policy)
        """What the filter keeps of the frame between opportunities, kept current with it."""
        self._ids = np.zeros(0, dtype=np.int64)
        self._rows = np.zeros(0, dtype=np.int64)
        self._stream_id = "0-0"
        self._watermark_ms = 0
        self._scan_pos = 0
        self._sweeps = 0
        self.session_reads = {"fresh": 0, "rechecked": 0}
        """Session expiries read by the refreshes so far (starts and extensions; the re-check)."""
        self._cooldowns: MarkStore = {}
        self._pending: MarkStore = {}
        self._set_until = client.register_script(_SET_UNTIL)

    # -- the index ------------------------------------------------------------------

    def __len__(self) -> int:
        return self.frame.height

    def _reindex(self) -> None:
        ids = self.frame.get_column("user_id").to_numpy()
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]
        self._rows = order.astype(np.int64)
        self._reposition()

    def _reposition(self, *, unknown_only: bool = False) -> None:
        """Re-find the rows of the marked targets (after a re-index; ``unknown_only``: after
        rows were appended, only for marks of targets that had no row)."""
        for store in (self._cooldowns, self._pending):
            for key, (ids, until, rows) in store.items():
                if not unknown_only or (rows < 0).any():
                    store[key] = (ids, until, row_positions(self._ids, self._rows, ids))

    def row_of(self, user_id: int) -> int | None:
        if not self._ids.size:
            return None
        pos = int(np.searchsorted(self._ids, user_id))
        if pos < self._ids.size and self._ids[pos] == user_id:
            return int(self._rows[pos])
        return None

    def apply_changes(self, frame: pl.DataFrame) -> None:
        """Upsert a batch of rows (``user_id`` + any directory columns), columnar."""
        before = self.frame.height
        changed = row_positions(self._ids, self._rows, frame.get_column("user_id").to_numpy())
        self.frame = apply_row_changes(self.frame, frame, self._ids, self._rows)
        appended = np.arange(before, self.frame.height, dtype=np.int64)
        self.masks.update(self.frame, np.concatenate([changed[changed >= 0], appended]))
        if self.frame.height != before:
            added = self.frame.get_column("user_id").to_numpy()[before:]
            rows = np.arange(before, self.frame.height, dtype=np.int64)
            # sorted by id, so ids sharing an insertion point go in in order
            order = np.argsort(added, kind="stable")
            pos = np.searchsorted(self._ids, added[order])
            self._ids = np.insert(self._ids, pos, added[order])
            self._rows = np.insert(self._rows, pos, rows[order])
            self._reposition(unknown_only=True)

    def remove(self, user_ids: Iterable[int]) -> None:
        drop = pl.Series(list(user_ids), dtype=pl.Int64)
        if drop.len():
            keep = ~self.frame.get_column("user_id").is_in(drop.implode())
            self.frame = self.frame.filter(keep)
            self.masks.keep(self.frame, keep.to_numpy())
            self._reindex()

    # -- loading --------------------------------------------------------------------

    async def _last_stream_id(self) -> str:
        with _redis_errors("reading user changes"):
            raw: Any = await self.client.xrevrange(self.users.changes_key, count=1)
        last: list[Any] = list(raw or [])
        return _s(last[0][0]) if last else "0-0"

    async def load(self, now: datetime | None = None) -> int:
        """Materialise the whole directory from Redis; returns the number of targets."""
        now = now or datetime.now(UTC)
        self._stream_id = await self._last_stream_id()
        with _redis_errors("reading sessions"):
            scored: list[Any] = list(
                await self.client.zrange(self.sessions.expiry_key, 0, -1, withscores=True)
            )
        expiry = {int(m): int(score) for m, score in scored}
        self._watermark_ms = max(expiry.values(), default=0)
        rows: list[dict[str, Any]] = []
        batch: list[User] = []
        async for user in self.users.iter_users(BATCH):
            batch.append(user)
            if len(batch) >= BATCH:
                rows += await self._user_rows(batch, now, expiry)
                batch = []
        rows += await self._user_rows(batch, now, expiry)
        rows += await self._group_rows(now)
        self.frame = directory_frame(rows)
        self.masks = DirectoryMasks.build(self.frame, self.policy)
        self._reindex()
        await self._restore_marks(now)
        await self.load_affinities()
        return self.frame.height

    async def load_affinities(self, *, force: bool = False) -> bool:
        """Re-read the engagement model when its version moved (or ``force``); returns whether
        it was read. Personalization off: the model is dropped (every score NaN). A version
        that moves during the read is read again (at most 3 times)."""
        if not self.settings.personalization.enabled:
            self.affinity = Affinities()
            return False
        version = await self.models.version()
        if version == self.affinity.version and not force:
            return False
        for _ in range(3):
            records: list[tuple[int, str]] = []
            async for page in self.models.iter_records():
                records += page
            after = await self.models.version()
            if after == version:
                break
            version = after
        # decoded off the event loop (Polars releases the GIL): ~100k users' records take seconds
        self.affinity = await asyncio.to_thread(Affinities.from_records, records, version)
        return True

    def scores(self, user_ids: Sequence[int] | np.ndarray, opp: OpportunityView) -> np.ndarray:
        """Predicted engagement times edge of ``opp`` per id (NaN: no model; ``core.personalization``)."""
        return self.affinity.scores(user_ids, opp)

    async def _counters(
        self, ids: Sequence[int], now: datetime, zones: Sequence[str] | None = None
    ) -> list[tuple[int, int]]:
        """(used today, used this hour) per id; ``zones``: each one's zone (its local day)."""
        if not ids:
            return []
        keys: list[str] = []
        for i, uid in enumerate(ids):
            keys += self.quotas._keys(uid, now, zones[i] if zones is not None else "UTC")
        with _redis_errors("reading quotas"):
            values: list[Any] = list(await self.client.mget(keys))
        return [(int(values[i] or 0), int(values[i + 1] or 0)) for i in range(0, len(values), 2)]

    async def _user_rows(
        self, users: Sequence[User], now: datetime, expiry: dict[int, int]
    ) -> list[dict[str, Any]]:
        zones = [u.preferences.timezone for u in users]
        counters = await self._counters([u.id for u in users], now, zones)
        h = hour_bucket(now)
        return [
            user_row(
                u,
                self.policy,
                session_expires_ms=expiry.get(u.id),
                day_bucket=local_day(now, tz),
                day_used=du,
                hour_bucket=h,
                hour_used=hu,
            )
            for u, tz, (du, hu) in zip(users, zones, counters, strict=True)
        ]

    def _zones_of(self, ids: Sequence[int]) -> list[str]:
        """Each known target's zone (its row's ``tz``); groups and unknown ids: UTC."""
        names = self.policy.vocab.timezones
        tz = self.frame.get_column("tz")
        out = []
        for uid in ids:
            row = self.row_of(uid)
            out.append(names[int(tz[row])] if row is not None else "UTC")
        return out

    async def _group_rows(self, now: datetime) -> list[dict[str, Any]]:
        with _redis_errors("listing groups"):
            members: Any = await self.client.smembers(self.groups.ids_key)
        ids = sorted(int(m) for m in members)
        if not ids:
            return []
        with _redis_errors("reading groups"):
            async with self.client.pipeline(transaction=False) as pipe:
                for cid in ids:
                    pipe.hgetall(self.groups._key(cid))
                raws = await pipe.execute()
        counters = await self._counters(ids, now)
        d, h = day_bucket(now), hour_bucket(now)
        out = []
        for cid, raw, (du, hu) in zip(ids, raws, counters, strict=True):
            if not raw:
                continue
            g = {_s(k): _s(v) for k, v in raw.items()}
            out.append(
                group_row(
                    cid,
                    self.policy,
                    active=g.get("active") == "1",
                    pushes_on=g.get("pushes_on", "1") == "1",
                    min_net_bps=float(g.get("min_net_bps") or 0),
                    lang=g.get("lang"),  # a record of an older release has none: English
                    day_bucket=d,
                    day_used=du,
                    hour_bucket=h,
                    hour_used=hu,
                )
            )
        return out

    async def load_groups(self, now: datetime | None = None) -> int:
        """Re-read every group (groups change rarely and have no change stream)."""
        rows = await self._group_rows(now or datetime.now(UTC))
        if rows:
            self.apply_changes(directory_frame(rows))
        return len(rows)

    # -- staying current ---------------------------------------------------------------

    async def refresh(self, now: datetime | None = None) -> int:
        """Apply user changes and session changes since the last read; returns rows touched."""
        now = now or datetime.now(UTC)
        changed: dict[int, str] = {}
        while True:
            last, entries = await self.users.read_changes(self._stream_id, count=10_000)
            for entry in entries:
                changed[entry.user_id] = entry.field
            self._stream_id = last
            if len(entries) < 10_000:
                break
        deleted = [uid for uid, f in changed.items() if f == "-"]
        touched = [uid for uid, f in changed.items() if f != "-"]
        if deleted:
            self.remove(deleted)
        rows: list[dict[str, Any]] = []
        for i in range(0, len(touched), BATCH):
            chunk = touched[i : i + BATCH]
            users = await self.users.get_many(chunk)
            gone = [uid for uid in chunk if uid not in users]
            if gone:
                self.remove(gone)
            listed = [users[uid] for uid in chunk if uid in users]
            expiry = await self._expiries([u.id for u in listed])
            rows += await self._user_rows(listed, now, expiry)
        if rows:
            blocked = self.frame.get_column("blocked")
            for r in rows:  # a 403 seen by the notifier outlives a profile change
                idx = self.row_of(r["user_id"])
                if idx is not None:
                    r["blocked"] = bool(blocked[idx])
            self.apply_changes(directory_frame(rows))
        return len(rows) + len(deleted) + await self._refresh_sessions(now)

    async def _expiries(self, ids: Sequence[int]) -> dict[int, int]:
        if not ids:
            return {}
        with _redis_errors("reading sessions"):
            raw: Any = await self.client.zmscore(self.sessions.expiry_key, [str(i) for i in ids])
        scores: list[Any] = list(raw)
        return {uid: int(s) for uid, s in zip(ids, scores, strict=True) if s is not None}

    async def _refresh_sessions(self, now: datetime) -> int:
        # starts and extensions: above the watermark; every SKEW_EVERY refreshes also what was
        # written in the last minute by the writer's clock, below the watermark or not (a write
        # committed late, a clock behind): what a session written a minute ago would expire at
        self._sweeps += 1
        if self._sweeps % SKEW_EVERY == 0:
            low: int | str = to_ms(now) + self.sessions.ttl_ms - SESSION_SKEW_MS
        else:
            low = f"({self._watermark_ms}"
        with _redis_errors("reading sessions"):
            fresh: list[Any] = list(
                await self.client.zrangebyscore(self.sessions.expiry_key, low, "+inf", withscores=True)
            )
        fresh_ids = np.fromiter((int(m) for m, _s in fresh), dtype=np.int64, count=len(fresh))
        fresh_exp = np.fromiter((int(s) for _m, s in fresh), dtype=np.int64, count=len(fresh))
        if fresh_exp.size:
            self._watermark_ms = max(self._watermark_ms, int(fresh_exp.max()))
        self.session_reads["fresh"] += fresh_ids.size
        # ends: re-check a rotating slice of the targets believed in session
        ids, exp = await self._recheck_sessions()
        self.session_reads["rechecked"] += ids.size
        if ids.size and fresh_ids.size:  # what was just read wins over the re-check
            keep = ~np.isin(ids, fresh_ids)
            ids, exp = ids[keep], exp[keep]
        ids, exp = np.concatenate([fresh_ids, ids]), np.concatenate([fresh_exp, exp])
        rows = row_positions(self._ids, self._rows, ids)
        known = rows >= 0
        ids, exp, rows = ids[known], exp[known], rows[known]
        if not ids.size:
            return 0
        believed = self.frame.get_column("session_expires_ms").gather(rows).fill_null(NO_SESSION).to_numpy()
        diff = believed != exp
        if not diff.any():
            return 0
        ids, exp, rows, believed = ids[diff], exp[diff], rows[diff], believed[diff]
        # a started or extended session means the user talks to the bot: not blocked any more
        unblock = (exp != NO_SESSION) & ((believed == NO_SESSION) | (exp > believed))
        blocked = self.frame.get_column("blocked").gather(rows).to_numpy() & ~unblock
        self.apply_changes(
            pl.DataFrame(
                {
                    "user_id": ids,
                    "session_expires_ms": pl.Series(exp).replace(NO_SESSION, None),
                    "blocked": blocked,
                },
                schema={"user_id": pl.Int64, "session_expires_ms": pl.Int64, "blocked": pl.Boolean},
            )
        )
        return int(ids.size)

    def _scan_size(self, believed: int) -> int:
        """How many of the ``believed`` in-session targets one refresh re-checks: enough to go
        round them in :data:`RECHECK_ROUND_S` refreshes, at least :data:`RECHECK_MIN`, at most
        ``session_scan``."""
        return min(self.session_scan, max(RECHECK_MIN, -(-believed // RECHECK_ROUND_S)))

    async def _recheck_sessions(self) -> tuple[np.ndarray, np.ndarray]:
        """The next slice of the targets believed in session and their expiry in Redis now
        (:data:`NO_SESSION` where it is gone)."""
        users = (
            self.frame.filter((pl.col("audience") == "user") & pl.col("session_expires_ms").is_not_null())
            .get_column("user_id")
            .to_numpy()
        )
        if not users.size:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        n = min(self._scan_size(users.size), users.size)
        start = self._scan_pos % users.size
        ids = np.take(users, np.arange(start, start + n), mode="wrap")
        self._scan_pos = start + n
        with _redis_errors("reading sessions"):
            raw: Any = await self.client.zmscore(self.sessions.expiry_key, ids.tolist())
        exp = np.fromiter((NO_SESSION if s is None else int(s) for s in raw), dtype=np.int64, count=n)
        return ids, exp

    def note_session_ended(self, user_ids: Iterable[int]) -> None:
        ids = list(user_ids)
        self._set(ids, session_expires_ms=pl.Series([None] * len(ids), dtype=pl.Int64))

    def note_blocked(self, chat_ids: Iterable[int], blocked: bool = True) -> None:
        """The chat blocked the bot (a 403): ``context.blocked`` until told otherwise."""
        ids = [cid for cid in chat_ids if self.row_of(cid) is not None]
        self._set(ids, blocked=pl.Series([blocked] * len(ids), dtype=pl.Boolean))

    def _set(self, ids: list[int], **columns: pl.Series) -> None:
        known = [uid for uid in ids if self.row_of(uid) is not None]
        if not known:
            return
        keep = [uid in set(known) for uid in ids]
        frame = pl.DataFrame({"user_id": pl.Series(ids, dtype=pl.Int64)}).with_columns(
            **{k: v for k, v in columns.items()}
        )
        self.apply_changes(frame.filter(pl.Series(keep)))

    def note_sent(self, user_ids: Iterable[int] | np.ndarray, now: datetime) -> None:
        """Bump the local day/hour counters of targets just sent to (vectorised)."""
        ids = np.asarray(list(user_ids) if not isinstance(user_ids, np.ndarray) else user_ids, dtype=np.int64)
        if not ids.size or not self._ids.size:
            return
        pos = np.minimum(np.searchsorted(self._ids, ids), self._ids.size - 1)
        ok = self._ids[pos] == ids
        rows = pl.Series(self._rows[pos[ok]])
        if not rows.len():
            return
        h = hour_bucket(now)
        today = pl.lit(pl.Series([local_day(now, z) for z in self.policy.vocab.timezones], dtype=pl.Int32))
        cur = self.frame.select("tz", "day_bucket", "day_used", "hour_bucket", "hour_used")[rows]
        d = today.gather(pl.col("tz"))  # each target's local day
        bumped = cur.select(
            d.alias("day_bucket"),
            (pl.when(pl.col("day_bucket") == d).then(pl.col("day_used")).otherwise(0) + 1)
            .cast(pl.Int32)
            .alias("day_used"),
            pl.lit(h, pl.Int32).alias("hour_bucket"),
            (pl.when(pl.col("hour_bucket") == h).then(pl.col("hour_used")).otherwise(0) + 1)
            .cast(pl.Int32)
            .alias("hour_used"),
        )
        self.apply_changes(bumped.with_columns(user_id=pl.Series(ids[ok])))

    # -- cooldowns and pending marks ---------------------------------------------------

    def _cooldown_key(self, dedup_key: str) -> str:
        return cooldown_key(dedup_key, self.prefix)

    def _pending_key(self, dedup_key: str) -> str:
        return pending_key(dedup_key, self.prefix)

    async def cooled(self, dedup_key: str, now: datetime) -> np.ndarray:
        """Targets for which ``dedup_key`` is cooling down at ``now`` (from memory)."""
        return live_marks(self._cooldowns, dedup_key, now)[0]

    async def pending(self, dedup_key: str, now: datetime) -> np.ndarray:
        """Targets with an item queued for ``dedup_key`` at ``now`` (from memory)."""
        return live_marks(self._pending, dedup_key, now)[0]

    async def start_cooldown(
        self, dedup_key: str, user_ids: Sequence[int] | np.ndarray, now: datetime, cooldown_s: float
    ) -> None:
        """Start the cooldown of ``dedup_key`` for these targets: memory, and Redis in one round trip.

        The queue shards start cooldowns when they send (:class:`DeliveryMarks`); this is
        for admin tools and tests."""
        ids = np.unique(np.asarray(user_ids, dtype=np.int64))
        if not ids.size:
            return
        until = np.full(ids.size, to_ms(now + timedelta(seconds=cooldown_s)), dtype=np.int64)
        await self._write_until(self._cooldown_key(dedup_key), ids, until, "starting a cooldown")
        self._remember(self._cooldowns, dedup_key, ids, until)

    async def mark_pending(
        self, dedup_key: str, user_ids: Sequence[int] | np.ndarray, until_ms: Sequence[int] | np.ndarray
    ) -> None:
        """These targets have an item queued for ``dedup_key`` until ``until_ms`` (each its own)."""
        ids = np.asarray(user_ids, dtype=np.int64)
        until = np.asarray(until_ms, dtype=np.int64)
        if not ids.size:
            return
        ids, first = np.unique(ids, return_index=True)
        until = until[first]
        await self._write_until(self._pending_key(dedup_key), ids, until, "marking pushes pending")
        self._remember(self._pending, dedup_key, ids, until)

    async def release_pending(self, dedup_key: str, user_ids: Sequence[int] | np.ndarray) -> None:
        """Drop the pending marks of items that will not be queued after all."""
        ids = np.unique(np.asarray(user_ids, dtype=np.int64))
        if not ids.size:
            return
        with _redis_errors("releasing pending pushes"):
            await self.client.hdel(self._pending_key(dedup_key), *[str(i) for i in ids.tolist()])
        drop_marks(self._pending, dedup_key, ids)

    async def _write_until(self, key: str, ids: np.ndarray, until: np.ndarray, what: str) -> None:
        args = np.empty(ids.size * 2, dtype=np.int64)
        args[0::2], args[1::2] = ids, until
        with _redis_errors(what):
            await self._set_until(keys=[key], args=args.tolist())

    def _remember(self, store: MarkStore, dedup_key: str, ids: np.ndarray, until: np.ndarray) -> None:
        rows = row_positions(self._ids, self._rows, ids)
        old = store.get(dedup_key)
        if old is not None:
            keep = ~np.isin(old[0], ids)
            ids = np.concatenate([old[0][keep], ids])
            until = np.concatenate([old[1][keep], until])
            rows = np.concatenate([old[2][keep], rows])
        store[dedup_key] = (ids, until, rows)

    async def sync(self, pairs: Iterable[tuple[int, str]], now: datetime | None = None) -> int:
        """Re-read from Redis the quota counters, cooldowns and pending marks of these
        (target, dedup key) pairs: what a queue shard charged or released. Idempotent."""
        now = now or datetime.now(UTC)
        by_key: dict[str, set[int]] = {}
        for target, key in pairs:
            by_key.setdefault(str(key), set()).add(int(target))
        if not by_key:
            return 0
        keys = list(by_key)
        with _redis_errors("re-reading cooldowns"):
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    fields = [str(i) for i in sorted(by_key[key])]
                    pipe.hmget(self._cooldown_key(key), fields)
                    pipe.hmget(self._pending_key(key), fields)
                raws = await pipe.execute()
        now_ms = to_ms(now)
        for n, key in enumerate(keys):
            ids = np.array(sorted(by_key[key]), dtype=np.int64)
            for store, values in ((self._cooldowns, raws[2 * n]), (self._pending, raws[2 * n + 1])):
                until = np.array([int(v) if v is not None else 0 for v in values], dtype=np.int64)
                live = until > now_ms
                drop_marks(store, key, ids)
                if live.any():
                    self._remember(store, key, ids[live], until[live])
        targets = sorted({t for ids in by_key.values() for t in ids})
        known = [t for t in targets if self.row_of(t) is not None]
        if known:
            zones = self._zones_of(known)
            counters = await self._counters(known, now, zones)
            h = hour_bucket(now)
            self.apply_changes(
                pl.DataFrame(
                    {
                        "user_id": known,
                        "day_bucket": [local_day(now, z) for z in zones],
                        "day_used": [du for du, _ in counters],
                        "hour_bucket": [h] * len(known),
                        "hour_used": [hu for _, hu in counters],
                    },
                    schema={
                        "user_id": pl.Int64,
                        "day_bucket": pl.Int32,
                        "day_used": pl.Int32,
                        "hour_bucket": pl.Int32,
                        "hour_used": pl.Int32,
                    },
                )
            )
        return len(targets)

    async def _restore_marks(self, now: datetime) -> None:
        for store, prefix in (
            (self._cooldowns, self._cooldown_key("")),
            (self._pending, self._pending_key("")),
        ):
            store.clear()
            await self._restore(store, prefix, to_ms(now))

    async def _restore(self, store: MarkStore, prefix: str, now_ms: int) -> None:
        keys: list[str] = []
        with _redis_errors("reading cooldowns"):
            async for key in self.client.scan_iter(match=f"{prefix}*", count=1000):
                keys.append(_s(key))
        for i in range(0, len(keys), 100):
            chunk = keys[i : i + 100]
            with _redis_errors("reading cooldowns"):
                async with self.client.pipeline(transaction=False) as pipe:
                    for key in chunk:
                        pipe.hgetall(key)
                    raws = await pipe.execute()
            for key, raw in zip(chunk, raws, strict=True):
                pairs = [(int(k), int(v)) for k, v in raw.items() if int(v) > now_ms]
                if pairs:
                    arr = np.array(pairs, dtype=np.int64)
                    ids = arr[:, 0].copy()
                    store[key[len(prefix) :]] = (
                        ids,
                        arr[:, 1].copy(),
                        row_positions(self._ids, self._rows, ids),
                    )

    # -- decisions -----------------------------------------------------------------------

    async def decide(self, opp: OpportunityView, now: datetime) -> Decisions:
        """Every target's deciding reason for ``opp``, through :attr:`masks`: the eligible rows
        with their ``due_at`` and ``silent`` at once, the rest of the result when asked."""
        rows = live_marks(self._cooldowns, opp.dedup_key, now)[1]
        return self.masks.evaluate(opp, now, rows[rows >= 0])

    async def evaluate(self, opp: OpportunityView, now: datetime) -> pl.DataFrame:
        """Every target's deciding layer for ``opp`` (``core.eligibility.evaluate``'s result)."""
        return (await self.decide(opp, now)).result()

    async def why(self, user_id: int, opp: OpportunityView, now: datetime) -> tuple[Layer, str]:
        """``/admin why``: the layer that decided for one target."""
        return explain(self.frame, user_id, opp, now, self.policy, await self.cooled(opp.dedup_key, now))
