"""The Telegram figures (report, ``/admin``, dashboard) leave out the ``deliveries`` rows of
outbound webhook POSTs (``channel = 'webhook'``): a lake with them answers as one without."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pipeline.analytics as an
from pipeline.deliveries import deliveries_table
from tests.unit.pipeline.test_analytics import DAY, NOW, _delivery, rows, sample_rows, write_rows


def test_webhook_rows_do_not_change_the_telegram_figures(tmp_path: Path) -> None:
    plain = write_rows(tmp_path / "plain", sample_rows(NOW))
    tables = sample_rows(NOW)
    at = NOW - timedelta(minutes=5)
    hooks = [
        _delivery(
            "retry", at, chat=77, user_id=77, tier="premium", channel="webhook", reason="wh_1: HTTP 503"
        ),
        _delivery(
            "sent", at, chat=77, user_id=77, tier="premium", channel="webhook", latency_ms=5.0, attempt=2
        ),
        _delivery(
            "failed", at, chat=78, user_id=78, tier="premium", channel="webhook", reason="wh_2: timeout"
        ),
    ]
    mixed_rows = [*tables["deliveries"].to_pylist(), *hooks]
    tables["deliveries"] = deliveries_table(mixed_rows)
    mixed = write_rows(tmp_path / "mixed", tables)
    for figure in (
        an.summary,
        an.latency_percentiles,
        an.engagement_by_kind,
        an.deliveries_by_tier,
        an.deliveries_per_hour,
        an.deliveries_per_minute,
        an.skips_by_layer,
    ):
        assert rows(figure(mixed, DAY, now=NOW)) == rows(figure(plain, DAY, now=NOW)), figure.__name__
