"""What the demo's Telegram side reports: the figures it collects and the tables printed."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from rich.table import Table

from core.accounts import OnboardingStep, Tier
from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class TelegramReport:
    users: int
    created: int = 0
    started: int = 0
    """Users whose /start got the onboarding screen."""
    stalled: int = 0
    """Users whose bot reply did not come within the timeout."""
    not_reached: int = 0
    """Users the deadline came before."""
    interrupted: int = 0
    """Users the deadline stopped half-way (onboarding or /opportunities)."""
    referrals: int = 0
    presses: int = 0
    sessions_active: int = 0
    """Of the demo's users: an active session in Redis."""
    sessions_active_all: int = 0
    """``RedisSessionStore.count_active``: every active session in this Redis."""
    session_events: dict[str, int] = field(default_factory=dict)
    too_many: int = 0
    bot_requests: int = 0
    deliveries_ok: int = 0
    deliveries_failed: int = 0
    opp_sent: int = 0
    opp_answered: int = 0
    opp_listed: int = 0
    """Of the answers: a page of opportunities (not "nothing matches" or a quota message)."""
    opps_open: int = 0
    opp_deferred_left: int = 0
    """Users still waiting for a first opportunity to ask about at the deadline."""
    funnel: dict[str, int] = field(default_factory=dict)
    by_tier: dict[str, Counter[str]] = field(default_factory=dict)
    timezones: Counter[str] = field(default_factory=Counter)
    setup_s: float = 0.0
    """From the demo's start until the webhook's /readyz said ready (the bot shards built)."""
    phases: dict[str, float] = field(default_factory=dict)
    reply_s: list[float] = field(default_factory=list)
    """User action → the bot's reply seen in the chat (includes up to one poll interval)."""
    webhook_s: list[float] = field(default_factory=list)
    """User action → the webhook's 200 (the sandbox delivers one update at a time)."""
    pushes_seen: Counter[str] = field(default_factory=Counter)
    """Pushes the simulated users got, by their experiment variant (``-``: none)."""
    push_presses: Counter[str] = field(default_factory=Counter)
    """Of them, pushes whose details button the user pressed, by variant."""
    serve_url: str = ""
    sandbox_url: str = ""
    errors: list[str] = field(default_factory=list)


def session_events(settings: Settings, since: datetime) -> dict[str, int]:
    """``session_events`` rows of this run by event (empty when the dataset is not there)."""
    from pipeline.lake import Lake
    from pipeline.query import run_query

    try:
        rows = run_query(
            Lake.from_settings(settings.lake),
            f"SELECT event, count(*) AS n FROM session_events "
            f"WHERE ts >= TIMESTAMPTZ '{since.isoformat()}' GROUP BY event ORDER BY event",
        ).to_pylist()
    except Exception:
        return {}
    return {str(r["event"]): int(r["n"]) for r in rows}


def _q(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _pct(n: int, of: int) -> str:
    return f"{100 * n / of:.0f}%" if of else "-"


def telegram_tables(report: TelegramReport) -> list[Table]:
    tg = Table(
        title="Telegram (sandbox → Ray Serve webhook → bot shards)", min_width=51, title_justify="left"
    )
    tg.add_column("figure")
    tg.add_column("value", justify="right")
    tg.add_row("users simulated / created in the sandbox", f"{report.users:,} / {report.created:,}")
    tg.add_row("/start answered with onboarding", f"{report.started:,}")
    tg.add_row("stopped half-way by the deadline", f"{report.interrupted:,}")
    tg.add_row("not reached before the deadline", f"{report.not_reached:,}")
    if report.stalled:
        tg.add_row("no reply within the timeout", f"{report.stalled:,}")
    tg.add_row("of them with a deep link (ref/campaign)", f"{report.referrals:,}")
    tg.add_row("sessions active (demo users)", f"{report.sessions_active:,}")
    tg.add_row("sessions active in Redis (count_active)", f"{report.sessions_active_all:,}")
    if report.session_events:
        tg.add_row(
            "session_events in the lake",
            ", ".join(f"{k} {v:,}" for k, v in sorted(report.session_events.items())),
        )
    tg.add_row("button presses", f"{report.presses:,}")
    if report.pushes_seen:
        seen, pressed = report.pushes_seen, report.push_presses
        by_variant = ", ".join(f"{v} {seen[v]:,} / {pressed[v]:,}" for v in sorted(seen))
        tg.add_row("pushes seen / pressed, by variant", by_variant)
    tg.add_row(
        "/opportunities sent / answered / with a list",
        f"{report.opp_sent:,} / {report.opp_answered:,} / {report.opp_listed:,}",
    )
    tg.add_row("open opportunities at the end", f"{report.opps_open:,}")
    tg.add_row("Bot API requests to the sandbox", f"{report.bot_requests:,}")
    tg.add_row("429s (flood limits)", f"{report.too_many:,}")
    tg.add_row("webhook deliveries ok / failed", f"{report.deliveries_ok:,} / {report.deliveries_failed:,}")
    if report.reply_s:
        tg.add_row(
            "webhook 200 p50 / p95",
            f"{_q(report.webhook_s, 0.5):,.0f} / {_q(report.webhook_s, 0.95):,.0f} ms",
        )
        tg.add_row(
            "bot reply seen p50 / p95", f"{_q(report.reply_s, 0.5):,.0f} / {_q(report.reply_s, 0.95):,.0f} ms"
        )
    tg.add_row("bot ready after", f"{report.setup_s:.1f} s" if report.setup_s else "not ready")
    log.debug("demo telegram setup phases: %s", report.phases)
    for err in report.errors[:5]:
        tg.add_row("[red]error[/]", err)

    started = sum(n for step, n in report.funnel.items() if step != OnboardingStep.NEW.value)
    funnel = Table(title="Onboarding funnel (furthest step per user)", min_width=42, title_justify="left")
    funnel.add_column("step")
    funnel.add_column("stopped here", justify="right")
    funnel.add_column("% of started", justify="right")
    funnel.add_column("reached", justify="right")
    funnel.add_column("% reached", justify="right")
    steps = list(OnboardingStep)
    for i, step in enumerate(steps):
        here = report.funnel.get(step.value, 0)
        reached = sum(report.funnel.get(s.value, 0) for s in steps[i:])
        if step is OnboardingStep.NEW:
            funnel.add_row(step.value, f"{here:,}", "-", "-", "-")
            continue
        funnel.add_row(step.value, f"{here:,}", _pct(here, started), f"{reached:,}", _pct(reached, started))
    funnel.caption = f"{started:,} users started (sent /start and opted in)"

    tiers = Table(title="Demo users by tier", title_justify="left")
    for col in ("tier", "users", "started", "finished onboarding"):
        tiers.add_column(col, justify="left" if col == "tier" else "right")
    for tier in Tier:
        row = report.by_tier.get(tier.value)
        if row:
            tiers.add_row(tier.value, f"{row['users']:,}", f"{row['started']:,}", f"{row['finished']:,}")
    if report.timezones:
        top = ", ".join(f"{tz} {n}" for tz, n in report.timezones.most_common(6))
        tiers.caption = f"time zones: {top}"
    return [tg, funnel, tiers] if report.funnel else [tg]


def try_by_hand_hint(settings: Settings) -> str:
    from serve.standins.sandbox import DEFAULT_TOKEN

    port = settings.http.port
    return (
        "Try the bot by hand (the demo's sandbox and bot stopped with it):\n"
        "  1. [bold]uv run arbflow sandbox[/]   → chat page http://127.0.0.1:8081/chat\n"
        "  2. in another shell:\n"
        "     [bold]export ARBFLOW_TELEGRAM__API_BASE=http://127.0.0.1:8081[/]\n"
        f"     [bold]export ARBFLOW_TELEGRAM__TOKEN={DEFAULT_TOKEN}[/]\n"
        f"     [bold]export ARBFLOW_TELEGRAM__PUBLIC_URL=http://127.0.0.1:{port}[/]\n"
        "     [bold]uv run arbflow serve[/]   (calls setWebhook on the sandbox; docs/bot.md)"
    )
