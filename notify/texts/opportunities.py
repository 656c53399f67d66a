"""Texts of /opportunities: the list, the details view, the backtest."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from core.accounts import TierPolicy, next_local_midnight
from core.lifecycle import OpenOpportunity
from core.models import OpportunityKind, Priority, RejectReason
from notify.i18n import _, ngettext

if TYPE_CHECKING:
    from pipeline.backtest import FundingCarryResult, SpotSpreadResult
from notify.texts.base import (
    _CONSTANTS,
    KIND_LABELS,
    KIND_SHORT,
    constant,
    esc,
    fmt_apr,
    fmt_bps,
    fmt_bps_day,
    fmt_duration,
    fmt_horizon,
    fmt_quota,
    fmt_time,
    fmt_usd,
    na,
    tier_label,
    transfer_lines,
)

# -- opportunities --------------------------------------------------------------------------


def _legs(opp: OpenOpportunity) -> str:
    c = opp.candidate
    return legs_text(c.kind, c.buy_exchange, c.sell_exchange)


def legs_text(kind: OpportunityKind, buy: str | None, sell: str | None) -> str:
    """The venues of an opportunity: ``buy A → sell B``, ``long A / short B``, ``long on A``."""
    if kind is OpportunityKind.FUNDING_RATE:
        return _("long {buy} / short {sell}").format(buy=esc(buy), sell=esc(sell))
    if kind is OpportunityKind.TECHNICAL:
        return _("long on {ex}").format(ex=esc(buy)) if buy else _("short on {ex}").format(ex=esc(sell))
    return _("buy {buy} → sell {sell}").format(buy=esc(buy), sell=esc(sell))


def _opt_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _funding_apr(net_bps: float, net_apr: float | None, horizon: float | None) -> float | None:
    """The net APR (fraction): given, or ``net_bps`` over a known horizon."""
    if net_apr is not None and math.isfinite(net_apr):
        return net_apr
    if horizon and math.isfinite(net_bps):
        return net_bps / 10_000 * 8760 / horizon
    return None


def edge_value(
    kind: OpportunityKind, net_bps: float, net_apr: float | None = None, horizon: float | None = None
) -> str:
    """The one figure of a list line, in the kind's unit: spot net bps (instant), funding net
    % APR, technical none (``""``)."""
    if kind is OpportunityKind.TECHNICAL:
        return ""
    if kind is OpportunityKind.FUNDING_RATE:
        apr = _funding_apr(net_bps, net_apr, horizon)
        if apr is not None:
            return fmt_apr(apr)
        if horizon:
            return _("{edge} over {horizon}").format(edge=fmt_bps(net_bps), horizon=fmt_horizon(horizon))
        return fmt_bps(net_bps)
    return fmt_bps(net_bps)


def edge_lines(
    kind: OpportunityKind,
    net_bps: float,
    gross_bps: float,
    gross_apr: float | None,
    net_apr: float | None = None,
    horizon: float | None = None,
) -> list[str]:
    """The edge of one opportunity in its kind's unit (push and card).

    Spot: the net edge now, in bps. Funding: net APR and bps a day, and the totals with the
    horizon they are a return over. Technical: no edge (nothing).
    """
    if kind is OpportunityKind.TECHNICAL:
        return []
    if kind is OpportunityKind.SPOT_SPREAD:
        return [
            _("Net: <b>{net}</b> (gross {gross}) · instant").format(
                net=fmt_bps(net_bps), gross=fmt_bps(gross_bps)
            )
        ]
    lines = []
    apr = _funding_apr(net_bps, net_apr, horizon)
    if apr is not None:
        lines.append(_("Net: <b>{apr}</b> · {per_day}").format(apr=fmt_apr(apr), per_day=fmt_bps_day(apr)))
        if not horizon and apr and math.isfinite(net_bps):  # the horizon the total is over
            horizon = round(net_bps / 10_000 * 8760 / apr, 1)
    if gross_apr is not None and math.isfinite(gross_apr):
        lines.append(_("Gross: {apr}").format(apr=fmt_apr(gross_apr)))
    if horizon:
        total = _("Total over {horizon}: net {net} (gross {gross})").format(
            horizon=fmt_horizon(horizon), net=fmt_bps(net_bps), gross=fmt_bps(gross_bps)
        )
    else:
        total = _("Total over the carry's horizon: net {net} (gross {gross})").format(
            net=fmt_bps(net_bps), gross=fmt_bps(gross_bps)
        )
    lines.append(total)
    return lines


def _candidate_units(c: Any) -> tuple[float | None, float | None]:
    details = c.details or {}
    return _opt_float(details.get("net_apr")), _opt_float(details.get("horizon_hours"))


def candidate_edge(c: Any) -> str:
    """An open opportunity's edge in its kind's unit (``""`` for a technical signal)."""
    return edge_value(c.kind, c.net_bps, *_candidate_units(c))


def opportunity_line(n: int, opp: OpenOpportunity) -> str:
    c = opp.candidate
    value = candidate_edge(c)
    tail = f" · {value}" if value else ""
    return f"{n}. <b>{esc(c.symbol)}</b> {KIND_SHORT[c.kind]} · {_legs(opp)}{tail}"


def opportunity_card(opp: OpenOpportunity, now: datetime) -> str:
    c = opp.candidate
    lines = [
        f"<b>{esc(c.symbol)}</b> — {KIND_LABELS[c.kind]}",
        _legs(opp),
        *edge_lines(c.kind, c.net_bps, c.gross_bps, c.gross_apr, *_candidate_units(c)),
    ]
    details = c.details or {}
    lines += transfer_lines(
        details.get("transfer_network"),
        _opt_float(details.get("transfer_bps")),
        RejectReason.TRANSFER_UNKNOWN.value in c.flags,
    )
    lines += [
        _("Size: {size}").format(size=fmt_usd(c.size_usd)),
        _("Confidence: {confidence}% · priority {priority}").format(
            confidence=f"{c.confidence * 100:.0f}", priority=priority_label(c.priority)
        ),
        _("Open for {open} (updated {updated} ago)").format(
            open=fmt_duration(now - opp.opened_at), updated=fmt_duration(now - opp.updated_at)
        ),
    ]
    if c.flags:
        lines.append(_("Flags: {flags}").format(flags=esc(", ".join(c.flags))))
    return "\n".join(lines)


def priority_label(priority: Priority) -> str:
    return {Priority.HIGH: _("high"), Priority.MEDIUM: _("medium"), Priority.LOW: _("low")}.get(
        priority, esc(priority.value)
    )


def opportunities_page(
    items: Sequence[OpenOpportunity], page: int, pages: int, total: int, left_day: int | None
) -> str:
    head = _("<b>Open opportunities</b> ({total}) · page {page}/{pages}").format(
        total=total, page=page + 1, pages=max(pages, 1)
    )
    body = [opportunity_line(page * 5 + i + 1, o) for i, o in enumerate(items)]
    foot = _("Views left today: {left}. Tap a number for details.").format(left=fmt_quota(left_day))
    return "\n".join([head, "", *body, "", foot])


def fmt_money(value: float) -> str:
    """A signed USD amount with cents: ``+$12.34``, ``-$0.50``."""
    if not math.isfinite(value):
        return na()
    return f"{'-' if value < 0 else '+'}${abs(value):,.2f}"


def _seconds(value: float | None) -> str:
    return na() if value is None else fmt_duration(timedelta(seconds=value))


def backtest_funding(r: FundingCarryResult, days: int) -> str:
    """The "Backtest" button on a funding carry: what it would have earned after fees."""
    head = _("<b>Backtest · {symbol}</b> · funding carry · last {days} d").format(
        symbol=esc(r.symbol), days=days
    )
    legs = _("long {long} / short {short} · {notional} a leg").format(
        long=esc(r.long), short=esc(r.short), notional=fmt_usd(r.notional_usd)
    )
    if r.settlements_long == 0 and r.settlements_short == 0:
        return "\n".join([head, legs, "", constant("BACKTEST_NO_DATA")])
    return "\n".join(
        [
            head,
            legs,
            _("Settlements: {n_long} {long} · {n_short} {short}").format(
                n_long=r.settlements_long, long=esc(r.long), n_short=r.settlements_short, short=esc(r.short)
            ),
            _("Funding earned: {usd}").format(usd=fmt_money(r.earned_usd)),
            _("Fees (open + close both legs): {usd}").format(usd=fmt_money(-r.fees_usd)),
            _("<b>Net after fees: {usd}</b> ({apr})").format(
                usd=fmt_money(r.net_usd), apr=fmt_apr(r.net_apr)
            ),
            _("From the lake's funding history; price moves of the hedge are not included."),
        ]
    )


def backtest_spot(r: SpotSpreadResult, days: int) -> str:
    """The "Backtest" button on a spot spread: how often and how long it was open above the
    user's spot minimum, and its median net edge."""
    head = _("<b>Backtest · {symbol}</b> · spot spread · last {days} d").format(
        symbol=esc(r.symbol), days=days
    )
    legs = _("buy {buy} → sell {sell} · above {threshold} net of fees").format(
        buy=esc(r.buy), sell=esc(r.sell), threshold=fmt_bps(r.threshold_bps)
    )
    if r.observations == 0:
        return "\n".join([head, legs, "", constant("BACKTEST_NO_DATA")])
    if r.episodes == 0:
        quoted = _("From {n} quotes of both legs over {span}.").format(
            n=f"{r.observations:,}", span=_seconds(r.quoted_s)
        )
        return "\n".join([head, legs, _("Never open above it in the window."), quoted])
    share = na() if r.open_share is None else f"{100 * r.open_share:.1f}%"
    return "\n".join(
        [
            head,
            legs,
            ngettext(
                "Open {n} time, {open} in all ({share} of the quoted time)",
                "Open {n} times, {open} in all ({share} of the quoted time)",
                r.episodes,
            ).format(n=r.episodes, open=_seconds(r.open_s), share=share),
            _("Median episode: {median} · longest: {longest}").format(
                median=_seconds(r.median_episode_s), longest=_seconds(r.longest_episode_s)
            ),
            _("<b>Median net edge when open: {edge}</b>").format(edge=fmt_bps(r.median_net_bps)),
            _("From {n} quotes of both legs in the lake.").format(n=f"{r.observations:,}"),
        ]
    )


_CONSTANTS["BACKTEST_NO_DATA"] = lambda: _("No history in the lake for this window yet.")
_CONSTANTS["BACKTEST_FAILED"] = lambda: _(
    "Backtest unavailable: the history could not be read right now. Try again later."
)


_CONSTANTS["NO_OPPORTUNITIES"] = lambda: _(
    "Nothing open matches your tier and settings right now. "
    "I'll alert you when something does; /settings widens the net."
)
_CONSTANTS["OPPORTUNITY_CLOSED"] = lambda: _("That opportunity has closed.")


def quota_exhausted(policy: TierPolicy, now: datetime, *, hourly: bool, tz: str = "UTC") -> str:
    """The daily quota resets at the user's local midnight, the hourly one each UTC hour."""
    if hourly:
        reset = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        what = _("this hour's {n}").format(n=policy.hourly_quota)
    else:
        reset = next_local_midnight(now, tz)
        what = _("today's {n}").format(n=policy.daily_quota)
    return _(
        "📭 You've used {what} views/alerts ({tier} tier). "
        "Quota resets at {reset} (in {left}). "
        "/subscription for higher limits."
    ).format(
        what=what, tier=tier_label(policy.tier), reset=fmt_time(reset, tz), left=fmt_duration(reset - now)
    )
