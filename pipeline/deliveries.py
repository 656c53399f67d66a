"""Delivery outcomes and engagement as lake rows (``analytics/deliveries``, ``analytics/engagement``).

One :data:`DELIVERIES` row per outcome of one notification for one chat: ``queued``,
then exactly one of ``sent``, ``failed`` (dead-lettered after its retries, or a
permanent error), ``skipped`` (an eligibility layer said no: ``layer`` and ``reason``),
``expired`` (too old, or its opportunity closed or went stale before its turn) or
``blocked`` (403: the chat blocked the bot); ``retry`` rows record each transient
failure on the way. An item a tier delay hid until its opportunity closed ends ``expired``
with reason ``missed`` and its ``lifetime_s``; the "missed while delayed" digest that later
lists it is one row of kind ``missed_digest``, reason ``digest``, ``digest_size`` its items
(``actors.missed``). Files written before ``lifetime_s`` existed read it as null. ``channel``
says how it travelled (Telegram, or an outbound webhook's POST), ``bot_id`` which bot of the
pool sent it, ``experiment`` and ``variant`` the notification strategy the user was assigned;
files written before them (version 2) read them as null. The sink partitions the dataset by
``queued_at``.

:data:`ENGAGEMENT` rows record what users do with what they were shown: a button
pressed on a pushed message, an ``/opportunities`` view, details opened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

import pyarrow as pa

from pipeline.schemas import TS

DELIVERIES_DATASET = "deliveries"
ENGAGEMENT_DATASET = "engagement"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    SKIPPED = "skipped"
    EXPIRED = "expired"
    BLOCKED = "blocked"


class DeliveryChannel(StrEnum):
    """How a row's notification travelled: a Telegram message, or a POST to a user's
    outbound webhook (files written before the column existed read it as null: Telegram)."""

    TELEGRAM = "telegram"
    WEBHOOK = "webhook"


class Audience(StrEnum):
    USER = "user"
    GROUP = "group"
    CHANNEL = "channel"


DELIVERIES = pa.schema(
    [
        pa.field("queued_at", TS, nullable=False),  # when the opportunity event was fanned out
        pa.field("opportunity_id", pa.string(), nullable=False),
        pa.field("chat_id", pa.int64()),  # null only for a channel known by @name
        pa.field("chat_ref", pa.string()),  # "@name" of such a channel
        pa.field("user_id", pa.int64()),  # null for groups and channels
        pa.field("audience", pa.string(), nullable=False),  # user | group | channel
        pa.field("status", pa.string(), nullable=False),  # DeliveryStatus
        pa.field("reason", pa.string()),  # skipped: the layer's reason; failed/retry: the error
        pa.field("layer", pa.int8()),  # skipped: the deciding eligibility layer (1-6)
        pa.field("kind", pa.string()),  # spot_spread | funding_rate | technical
        pa.field("tier", pa.string()),
        pa.field("priority", pa.string()),  # high | medium | low
        pa.field("net_bps", pa.float64()),
        pa.field("attempt", pa.int16()),
        pa.field("silent", pa.bool_()),  # sent with disable_notification (outside active hours)
        pa.field("digest_size", pa.int16()),  # notifications merged into this message
        pa.field("message_id", pa.int64()),
        pa.field("detected_at", TS),  # the opportunity event's time
        pa.field("due_at", TS),  # queued_at + the tier's delay (or the active-hours start)
        pa.field("sent_at", TS),
        pa.field("latency_ms", pa.float64()),  # detected_at -> sent_at
        pa.field("lifetime_s", pa.float64()),  # expired/missed: how long the opportunity lasted
        pa.field("channel", pa.string()),  # DeliveryChannel: telegram | webhook (null: telegram)
        pa.field("bot_id", pa.int64()),  # the bot of the pool that sent it (null: the one bot)
        pa.field("experiment", pa.string()),  # the experiment the user was in, if any
        pa.field("variant", pa.string()),  # the user's variant of that experiment
    ]
)
"""Arrow schema of the ``deliveries`` dataset."""

ENGAGEMENT = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("chat_id", pa.int64()),
        pa.field("action", pa.string(), nullable=False),  # push_button | list_view | details | ...
        pa.field("opportunity_id", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("detail", pa.string()),
    ]
)
"""Arrow schema of the ``engagement`` dataset."""


def deliveries_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts with any subset of :data:`DELIVERIES`' columns) as a lake table."""
    return pa.Table.from_pylist([dict(r) for r in rows], schema=DELIVERIES)


def engagement_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([dict(r) for r in rows], schema=ENGAGEMENT)
