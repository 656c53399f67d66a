"""Terminal tables of the push side, read from the lake with DuckDB (``deliveries``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.table import Table

from core.accounts import Tier
from core.settings import Settings

DIGEST_KIND = "missed_digest"
"""``kind`` of a "missed while delayed" digest row (``actors.missed.DIGEST_KIND``)."""
MISSED_REASON = "missed"
"""``reason`` of an item's ``expired`` row when a tier delay hid it until it closed."""

DELIVERIES_QUERY = """
SELECT status, count(*) AS n, count(DISTINCT chat_id) AS chats
FROM deliveries GROUP BY status ORDER BY n DESC
""".strip()
"""The sample query the demo prints (``arbflow query`` runs it too)."""


def _rows(settings: Settings, sql: str) -> list[dict[str, Any]]:
    from pipeline.lake import Lake
    from pipeline.query import run_query

    try:
        return list(run_query(Lake.from_settings(settings.lake), sql).to_pylist())
    except Exception:  # no deliveries yet: no view
        return []


def delivery_tables(settings: Settings, stats: dict[str, Any], since: datetime) -> list[Table]:
    """Pushes by tier, skips by layer, 429s, opportunity → send latency, and the sample query."""
    # Telegram's rows: outbound webhook POSTs have their own table (serve/standins/demo_webhooks.py)
    when = f"queued_at >= TIMESTAMPTZ '{since.isoformat()}' AND coalesce(channel, 'telegram') = 'telegram'"
    totals = stats.get("totals") or {}
    if not totals:
        for shard in stats.get("shards", []):
            for key, value in shard.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value

    by_tier = Table(title="Pushes by tier", min_width=14)
    for col in ("tier", "sent", "chats", "digests", "missed while delayed", "missed digests"):
        by_tier.add_column(col, justify="left" if col == "tier" else "right")
    found = {
        str(r["tier"]): r
        for r in _rows(
            settings,
            f"SELECT coalesce(tier, audience) AS tier, count(*) FILTER (WHERE status = 'sent') AS sent, "
            f"count(DISTINCT chat_id) FILTER (WHERE status = 'sent') AS chats, "
            f"count(*) FILTER (WHERE status = 'sent' AND digest_size > 1 "
            f"AND kind IS DISTINCT FROM '{DIGEST_KIND}') AS digests, "
            f"count(*) FILTER (WHERE status = 'expired' AND reason = '{MISSED_REASON}') AS missed, "
            f"count(*) FILTER (WHERE status = 'sent' AND kind = '{DIGEST_KIND}') AS missed_digests "
            f"FROM deliveries WHERE {when} GROUP BY 1",
        )
    }
    # every paying tier and Free, even with nothing sent (what a delayed tier gets is the point)
    order = [t.value for t in Tier if t is not Tier.SUPERADMIN or t.value in found]
    order += sorted(k for k in found if k not in order)
    for tier in order:
        r = found.get(tier) or {}
        by_tier.add_row(
            tier,
            *(f"{int(r.get(c) or 0):,}" for c in ("sent", "chats", "digests", "missed", "missed_digests")),
        )
    by_tier.caption = (
        "sent: items pushed plus missed-while-delayed digests; digests: pushes of several items; "
        "missed: closed before the tier delay was over"
    )

    skips = Table(title="Skipped, by deciding layer", min_width=26)
    for col in ("layer", "reason", "count"):
        skips.add_column(col, justify="right" if col == "count" else "left")
    for r in _rows(
        settings,
        f"SELECT layer, reason, count(*) AS n FROM deliveries WHERE status = 'skipped' AND {when} "
        f"GROUP BY 1, 2 ORDER BY 1, 3 DESC",
    ):
        skips.add_row(str(r["layer"]), str(r["reason"]), f"{r['n']:,}")

    health = Table(title="Delivery")
    health.add_column("figure")
    health.add_column("value", justify="right")
    lat = _rows(
        settings,
        f"SELECT quantile_cont(latency_ms, 0.5) AS p50, quantile_cont(latency_ms, 0.99) AS p99, "
        f"count(*) AS n FROM deliveries WHERE status = 'sent' AND {when}",
    )
    p50 = lat[0]["p50"] if lat else None
    p99 = lat[0]["p99"] if lat else None
    dist = stats.get("distributor") or {}
    health.add_row("opportunities fanned out", f"{dist.get('opportunities', 0):,}")
    health.add_row("queued", f"{totals.get('queued', 0):,}")
    health.add_row("sent (messages)", f"{totals.get('sent', 0):,} ({totals.get('messages', 0):,})")
    health.add_row("expired (closed or stale)", f"{totals.get('expired', 0):,}")
    health.add_row(
        "missed while delayed / digests sent",
        f"{totals.get('missed', 0):,} / {totals.get('missed_digests', 0):,}",
    )
    health.add_row(
        "retries / dead letters", f"{totals.get('retries', 0):,} / {totals.get('dead_letters', 0):,}"
    )
    health.add_row("blocked chats", f"{totals.get('blocked', 0):,}")
    health.add_row("429 answers from Telegram", f"{totals.get('throttled', 0):,}")
    model = dist.get("personalization") or {}
    if model.get("enabled"):  # docs/personalization.md
        health.add_row(
            "engagement model: users with one / runs",
            f"{model.get('users_with_model', 0):,} / {model.get('runs', 0):,}",
        )
    health.add_row(
        "opportunity → send p50 / p99",
        "-" if p50 is None else f"{p50:,.0f} ms / {p99:,.0f} ms",
    )

    sample = Table(title=f"DuckDB: {' '.join(DELIVERIES_QUERY.split())}")
    for col in ("status", "n", "chats"):
        sample.add_column(col, justify="left" if col == "status" else "right")
    for r in _rows(settings, DELIVERIES_QUERY):
        sample.add_row(str(r["status"]), f"{r['n']:,}", f"{r['chats']:,}")
    return [by_tier, skips, health, sample]
