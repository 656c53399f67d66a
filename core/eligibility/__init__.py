"""Eligibility: who gets one opportunity, decided for every push target at once (issue 5).

Pure: data in, decisions out; ``now`` is injected. The user directory is one Polars
frame (:data:`DIRECTORY_SCHEMA`, one row per push target) that ``actors.directory``
materialises from Redis and keeps current; :func:`evaluate` runs the six layers over all
rows at once and says, for every row, the *first* layer that failed (``0`` = eligible)
with a stable reason string. A directory that evaluates one opportunity after another
keeps a :class:`DirectoryMasks` (what does not depend on the opportunity, as per-row
reason codes per kind, exchange, symbol…, updated on change) and gets :class:`Decisions`
(the eligible rows at once, the rest when asked). :func:`evaluate_loop` is the
same rules as a plain per-row Python loop (the benchmark's baseline and the tests'
cross-check); :func:`explain` is ``/admin why``.

The layers, in order (the first failing one decides; within a layer the reasons are
checked in the order of :class:`Reason`):

1. **Session** — ``session.none`` (no session in the directory), ``session.expired``
   (``expires <= now``). Groups have no session: they always pass.
2. **Subscription** — ``subscription.kind`` (the tier does not include the kind),
   ``subscription.beta`` (the opportunity needs a beta flag — its own ``beta_flag`` or
   the policy's per-kind one — that the user lacks; SuperAdmins pass).
3. **Preferences** — ``preferences.off``, ``.kind``, ``.exchange`` (every leg must be in
   a non-empty set), ``.symbol``, ``.min_profit`` (below the target's minimum *for the
   opportunity's kind*, each in its own unit: spot ``net_bps < min_net_bps``, funding
   ``net_apr · 100 < min_net_apr_pct``, technical ``confidence < min_confidence``),
   ``.muted`` (``now < muted_until``), ``.hours``: outside the active hours with
   ``outside_hours="hold"`` the target is *eligible* with ``due_at`` = the next window
   opening (the queue drops what closed meanwhile); only when the policy sets
   ``max_hold_s`` and the window opens later than that does ``preferences.hours``
   decide. Outside the hours with ``"silent"``: eligible, ``silent=True`` (sent with
   ``disable_notification``), due as usual.
4. **Rate limits** — ``rate.daily``, ``rate.hourly`` (the tier's quotas against the
   directory's counters of the current UTC day/hour; ``None`` = unlimited; users only,
   groups are limited in layer 6), ``rate.cooldown`` (the target is in ``cooled``).
5. **Technical** — ``technical.api_keys`` (``only_my_exchanges`` and no API key for a
   leg), ``technical.ai_key`` (an AI-enhanced opportunity and no AI key).
6. **Context** — ``context.restricted``, ``context.region`` (the policy's region
   blocks), ``context.group_limit`` (a group's quotas: ``group_multiplier`` times Free's),
   ``context.blocked`` (the chat blocked the bot / the bot left the group).

``due_at`` (every row; it matters for eligible ones) is ``now`` + the tier's
``delay_s``, or the next opening of the active hours when that is later and the target
is held. Groups are Free for kinds and delay, and have no preferences but ``pushes_on``
and ``min_net_bps`` (their spot threshold; their funding and technical minimums are 0).

Encoding (:class:`Vocabulary`, owned by the policy the directory was built with: a
directory frame is only meaningful with the vocabulary that encoded it):

- ``kinds``: bit ``i`` = ``list(OpportunityKind)[i]``.
- ``exchanges`` / ``key_exchanges``: bit = the exchange's index in
  ``vocab.exchanges`` (0..62); bit 63 stands for "some exchange beyond the first 63",
  which no opportunity leg matches. ``exchanges == 0`` means all.
- symbols: ``symbols_n`` picked (0 = all), ``symbols_mask`` bits for the first 64
  symbol codes, ``symbols_extra`` the codes beyond (exact for any number of symbols).
- ``beta``: bit = index in ``vocab.beta_flags`` (first 64 flags).
- ``tz`` / ``region`` / ``lang``: indices into ``vocab.timezones`` / ``vocab.regions`` /
  ``vocab.languages`` (region 0 = unknown, language 0 = English; :func:`language_of`).
  ``window`` = ``start * 24 + end`` of the active hours (whole local hours,
  ``[start, end)``, wrapping midnight when ``start > end``), ``-1`` = always.
- times are Int64 epoch ms (UTC); quotas are ``day_used`` for the target's local day
  ``day_bucket`` (days since the epoch on the wall clock of its zone, ``tz``: the daily
  quota resets at the user's local midnight) and ``hour_used`` for UTC hour ``hour_bucket`` (hours since
  the epoch): a counter of another bucket counts as 0.

Rooms: ``schema`` (layers, reasons, columns), ``vocabulary``, ``opportunity`` (the view
and the policy), ``directory`` (rows), ``hours`` (active hours), ``masks``
(:class:`DirectoryMasks`, :class:`Decisions`), ``rules`` (:func:`evaluate` over a frame),
``reference`` (the loop and :func:`explain`).
"""

from core.eligibility.directory import directory_frame, empty_directory, group_row, language_of, user_row
from core.eligibility.hours import next_opening
from core.eligibility.masks import PASS, Decisions, DirectoryMasks
from core.eligibility.opportunity import (
    DEFAULT_AI_KEY_NAMES,
    THRESHOLD_COLUMN,
    EligibilityPolicy,
    OpportunityView,
    funding_net_apr,
)
from core.eligibility.reference import evaluate_loop, explain
from core.eligibility.rules import cooled_mask, evaluate
from core.eligibility.schema import (
    ALL_KINDS_MASK,
    AUDIENCE_DTYPE,
    AUDIENCES,
    DAY_MS,
    DIRECTORY_SCHEMA,
    EXCHANGE_SLOTS,
    HOUR_MS,
    KIND_BIT,
    KINDS,
    MASK_BITS,
    NO_EXPIRY_MS,
    OUT_OF_SCOPE,
    OVERFLOW_BIT,
    REASON_DTYPE,
    REASONS,
    RESULT_SCHEMA,
    TIER_DTYPE,
    TIERS,
    UTC_MS,
    Layer,
    Reason,
    day_bucket,
    hour_bucket,
    to_ms,
)
from core.eligibility.vocabulary import Vocabulary, zone

__all__ = [
    "ALL_KINDS_MASK",
    "AUDIENCES",
    "AUDIENCE_DTYPE",
    "DAY_MS",
    "DEFAULT_AI_KEY_NAMES",
    "DIRECTORY_SCHEMA",
    "EXCHANGE_SLOTS",
    "HOUR_MS",
    "KINDS",
    "KIND_BIT",
    "MASK_BITS",
    "NO_EXPIRY_MS",
    "OUT_OF_SCOPE",
    "OVERFLOW_BIT",
    "PASS",
    "REASONS",
    "REASON_DTYPE",
    "RESULT_SCHEMA",
    "THRESHOLD_COLUMN",
    "TIERS",
    "TIER_DTYPE",
    "UTC_MS",
    "Decisions",
    "DirectoryMasks",
    "EligibilityPolicy",
    "Layer",
    "OpportunityView",
    "Reason",
    "Vocabulary",
    "cooled_mask",
    "day_bucket",
    "directory_frame",
    "empty_directory",
    "evaluate",
    "evaluate_loop",
    "explain",
    "funding_net_apr",
    "group_row",
    "hour_bucket",
    "language_of",
    "next_opening",
    "to_ms",
    "user_row",
    "zone",
]
