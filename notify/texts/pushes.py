"""Pushes: one opportunity, a digest, the legs of one symbol, the edit on close, and the
"missed while delayed" digest."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from core.missed import MissedDigest, MissedItem, UpgradeOffer
from core.models import OpportunityKind, Priority
from core.notifications import PRIORITY_RANK, Digest, Notification
from notify.i18n import _, lazy, ngettext, use_locale

if TYPE_CHECKING:
    pass
from notify.texts.base import (
    _CONSTANTS,
    KIND_LABELS,
    KIND_SHORT,
    TELEGRAM_LIMIT,
    Translated,
    _fit,
    esc,
    fmt_apr,
    fmt_bps,
    fmt_duration,
    fmt_horizon,
    fmt_time,
    fmt_usd,
    na,
    tier_label,
    transfer_lines,
)
from notify.texts.opportunities import edge_lines, edge_value, legs_text

# -- pushes ---------------------------------------------------------------------------------

PRIORITY_MARK: Mapping[Priority, str] = {Priority.HIGH: "🔥", Priority.MEDIUM: "⚡", Priority.LOW: "•"}
_CONSTANTS["PUSH_DETAILS"] = lambda: _("🔎 Details")
_CONSTANTS["PUSH_MUTE"] = lambda: _("🔕 Mute 1 h")
_CONSTANTS["PUSH_MORE"] = lambda: _("📋 More")
PUSH_MUTE_HOURS = 1
PUSH_DIGEST_BUTTONS = 5
"""A digest offers a details button for each of its first items, at most this many."""


def _push_legs(n: Notification) -> str:
    return legs_text(n.kind, n.buy_exchange, n.sell_exchange)


_CONSTANTS["TRANSFER_UNKNOWN_TEXT"] = lambda: _(
    "⚠️ Transfer status unknown: check deposits and withdrawals before trading."
)


def fmt_price(value: float | None) -> str:
    """A price with the digits it needs (5 significant below 1, cents above)."""
    if value is None or not math.isfinite(value):
        return na()
    if abs(value) >= 1000:
        return f"{value:,.2f}"
    if abs(value) >= 1:
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    return f"{value:.5g}"


def fmt_fee(fraction: float | None) -> str:
    return na() if fraction is None or not math.isfinite(fraction) else f"{fraction * 100:.2f}%"


def fmt_rate(fraction: float | None, hours: float | None) -> str:
    """A funding rate per its interval: ``+0.0100% / 8 h``."""
    if fraction is None or not math.isfinite(fraction):
        return na()
    every = f" / {fmt_horizon(hours)}" if hours else ""
    return f"{fraction * 100:+.4f}%{every}"


def fmt_ago(delta: timedelta) -> str:
    secs = delta.total_seconds()
    if secs < 1:
        return _("just now")
    return _("{duration} ago").format(duration=fmt_duration(delta))


def _spot_lines(n: Notification) -> list[str]:
    lines = []
    if n.buy_vwap is not None and n.sell_vwap is not None:
        lines.append(
            _("Buy at {buy} · sell at {sell} (average prices for {notional})").format(
                buy=fmt_price(n.buy_vwap), sell=fmt_price(n.sell_vwap), notional=fmt_usd(n.notional_usd)
            )
        )
    if n.executable_usd is not None:
        fees = ""
        if n.buy_fee is not None or n.sell_fee is not None:
            fees = _(" · taker fees {buy} + {sell}, in the net").format(
                buy=fmt_fee(n.buy_fee), sell=fmt_fee(n.sell_fee)
            )
        lines.append(_("Executable: {usd} at this edge").format(usd=fmt_usd(n.executable_usd)) + fees)
    return lines


def _funding_lines(n: Notification, tz: str, now: datetime | None) -> list[str]:
    lines = []
    if n.long_rate is not None or n.short_rate is not None:
        lines.append(
            _("Funding: long {long} {long_rate} · short {short} {short_rate}").format(
                long=esc(n.buy_exchange),
                long_rate=fmt_rate(n.long_rate, n.long_interval_hours),
                short=esc(n.sell_exchange),
                short_rate=fmt_rate(n.short_rate, n.short_interval_hours),
            )
        )
    if n.next_funding is not None:
        soon = now is not None and n.next_funding > now
        left = (
            " " + _("(in {left})").format(left=fmt_duration(n.next_funding - now))
            if soon and now is not None
            else ""
        )
        lines.append(_("Next funding: {time}").format(time=fmt_time(n.next_funding, tz)) + left)
    return lines


SIGNAL_TEXT: Mapping[str, str] = Translated(
    {
        "rsi_oversold": lazy("RSI {v} — oversold"),
        "rsi_overbought": lazy("RSI {v} — overbought"),
        "macd_cross_up": lazy("MACD histogram crossed above zero ({v})"),
        "macd_cross_down": lazy("MACD histogram crossed below zero ({v})"),
        "bb_break_upper": lazy("Close {v} above the upper Bollinger band ({b})"),
        "bb_break_lower": lazy("Close {v} below the lower Bollinger band ({b})"),
    }
)


def _technical_lines(n: Notification) -> list[str]:
    if not n.signal:
        return []
    value = na()
    if n.indicator is not None:
        value = f"{n.indicator:.1f}" if n.signal.startswith("rsi") else fmt_price(n.indicator)
        if n.signal.startswith("macd"):
            value = f"{n.indicator:+.4g}"
    template = SIGNAL_TEXT.get(n.signal, esc(n.signal) + " ({v})")
    line = template.format(v=value, b=fmt_price(n.band))
    if n.timeframe:
        line += " " + _("on {timeframe} bars").format(timeframe=esc(n.timeframe))
    lines = [line]
    if n.hit_rate is not None and n.hit_samples:
        lines.append(
            ngettext(
                "Right {rate}% of the last {n} time it fired here",
                "Right {rate}% of the last {n} times it fired here",
                n.hit_samples,
            ).format(rate=f"{n.hit_rate * 100:.0f}", n=n.hit_samples)
        )
    return lines


def closed_after(seconds: float) -> str:
    return _("✅ Closed after {duration}").format(duration=fmt_duration(timedelta(seconds=seconds)))


def push_message(
    n: Notification, *, tz: str = "UTC", now: datetime | None = None, closed: float | None = None
) -> str:
    """One opportunity, pushed (HTML, at most 4096 characters): its edge in its kind's unit,
    what backs it (spot: prices, size, fees, transfer; funding: each leg's rate and the next
    funding; technical: the indicator and its past hit rate), times in ``tz``, and its age
    at ``now`` (the send time)."""
    lines = [
        f"{PRIORITY_MARK[n.priority]} <b>{esc(n.symbol)}</b> — {KIND_LABELS[n.kind]}",
        _push_legs(n),
    ]
    lines += edge_lines(n.kind, n.net_bps, n.gross_bps, n.gross_apr, n.net_apr, n.horizon_hours)
    if n.kind is OpportunityKind.SPOT_SPREAD:
        lines += _spot_lines(n)
        lines += transfer_lines(n.transfer_network, n.transfer_bps, n.transfer_unknown)
    elif n.kind is OpportunityKind.FUNDING_RATE:
        lines += _funding_lines(n, tz, now)
    else:
        lines += _technical_lines(n)
    confidence = f"{n.confidence * 100:.0f}%" if math.isfinite(n.confidence) else na()
    if n.kind is OpportunityKind.SPOT_SPREAD and n.executable_usd is not None:
        lines.append(
            _("Confidence {confidence}").format(confidence=confidence)
        )  # the size is on the executable line
    else:
        lines.append(
            _("Size: {size} · confidence {confidence}").format(
                size=fmt_usd(n.notional_usd), confidence=confidence
            )
        )
    age = f" · {fmt_ago(now - n.detected_at)}" if now is not None else ""
    lines.append(_("Detected {time}").format(time=fmt_time(n.detected_at, tz, seconds=True)) + age)
    if closed is not None:  # the sent message, edited when the opportunity closed
        lines.append(closed_after(closed))
    return _fit("\n".join(lines))


def push_line(i: int, n: Notification, closed: float | None = None) -> str:
    """One line of a digest (``closed``: its lifetime, once it closed)."""
    value = edge_value(n.kind, n.net_bps, n.net_apr, n.horizon_hours)
    value = f" · {value}" if value else ""
    end = f" · {closed_after(closed)}" if closed is not None else ""
    return (
        f"{i}. {PRIORITY_MARK[n.priority]} <b>{esc(n.symbol)}</b> {KIND_SHORT[n.kind]} · "
        f"{_push_legs(n)}{value}{end}"
    )


def push_digest(
    d: Digest, *, tz: str = "UTC", now: datetime | None = None, closed: Mapping[str, float] | None = None
) -> str:
    """Several opportunities in one message, most important first; trimmed to 4096 characters
    with a last line saying how many did not fit. ``closed``: opportunity id → lifetime (s)
    of those that closed since it was sent (the edit on close)."""
    closed = closed or {}
    if len(d) == 1:
        return push_message(d.top, tz=tz, now=now, closed=closed.get(d.top.opportunity_id))
    head = ngettext("📬 <b>{n} new opportunity</b>", "📬 <b>{n} new opportunities</b>", len(d)).format(
        n=len(d)
    )
    foot = _("Tap a number for details.")
    lines = [head, ""]
    used = len(head) + 1 + len(foot) + 2
    for i, n in enumerate(d.items, start=1):
        line = _fit(push_line(i, n, closed.get(n.opportunity_id)))
        more = _("…and {n} more: /opportunities").format(n=len(d) - i + 1)
        if used + len(line) + 1 + len(more) + 1 > TELEGRAM_LIMIT:
            lines.append(more)
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join([*lines, "", foot])


def push_compact(d: Digest, *, closed: Mapping[str, float] | None = None) -> str:
    """The compact layout (an experiment's variant, ``Digest.layout == "compact"``): one line
    per item, its symbol, kind, venues and edge, nothing else; numbered like the detail
    buttons when there are several. At most 4096 characters."""
    closed = closed or {}
    if len(d) == 1:
        line = push_line(1, d.top, closed.get(d.top.opportunity_id))
        return _fit(line.split(". ", 1)[1])
    lines: list[str] = []
    used = len(_("Tap a number for details.")) + 1
    for i, n in enumerate(d.items, start=1):
        line = _fit(push_line(i, n, closed.get(n.opportunity_id)))
        more = _("…and {n} more: /opportunities").format(n=len(d) - i + 1)
        if used + len(line) + 1 + len(more) + 1 > TELEGRAM_LIMIT:
            lines.append(more)
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join([*lines, _("Tap a number for details.")])


def push_muted_answer(until: datetime, tz: str) -> str:
    """Plain text (a callback answer is not HTML)."""
    from zoneinfo import ZoneInfo

    return _("🔕 Muted until {time} ({zone}). /mute 0 resumes alerts.").format(
        time=f"{until.astimezone(ZoneInfo(tz)):%H:%M}", zone=tz
    )


# -- grouped pushes -------------------------------------------------------------------------
# The legs of one thing a user acts on (the same symbol from several venues to one, due
# together for a chat) as one push ranked by net: core.notifications.leg_groups.


def _group_headline(kind: OpportunityKind, side: str, venue: str, n: int) -> str:
    v = esc(venue)
    if kind is OpportunityKind.FUNDING_RATE:
        if side == "sell":
            return ngettext(
                "Short {venue}, long on {n} venue", "Short {venue}, long on one of {n} venues", n
            ).format(venue=v, n=n)
        return ngettext(
            "Long {venue}, short on {n} venue", "Long {venue}, short on one of {n} venues", n
        ).format(venue=v, n=n)
    if side == "sell":
        return ngettext(
            "Sell on {venue}, buy on {n} venue", "Sell on {venue}, buy on one of {n} venues", n
        ).format(venue=v, n=n)
    return ngettext(
        "Buy on {venue}, sell on {n} venue", "Buy on {venue}, sell on one of {n} venues", n
    ).format(venue=v, n=n)


def grouped_leg_line(i: int, n: Notification, closed: float | None = None) -> str:
    """One leg of a grouped push: its venues, its net edge, its executable size (spot)."""
    parts = [f"{i}. {_push_legs(n)}"]
    value = edge_value(n.kind, n.net_bps, n.net_apr, n.horizon_hours)
    if value:
        parts.append(f"<b>{value}</b>")
    if n.kind is OpportunityKind.SPOT_SPREAD and n.executable_usd is not None:
        parts.append(_("{size} executable").format(size=fmt_usd(n.executable_usd)))
    if closed is not None:
        parts.append(closed_after(closed))
    return " · ".join(parts)


def grouped_push_message(
    d: Digest, *, tz: str = "UTC", now: datetime | None = None, closed: Mapping[str, float] | None = None
) -> str:
    """One push for the legs of one group (:func:`core.notifications.payload_of`): the symbol
    and the venue they share, every leg ranked by net (numbered like the detail buttons),
    then what backs the best leg (spot: prices, size, fees, transfer; funding: each leg's
    rate and the next funding), times in ``tz`` and the age at ``now``. ``closed``: legs that
    closed since it was sent → their lifetime (the edit on close marks each; when every leg
    closed, a last line says so)."""
    from core.notifications import by_net, shared_venue

    closed = closed or {}
    legs = by_net(d.items)
    best = legs[0]
    priority = min((n.priority for n in legs), key=lambda p: PRIORITY_RANK[p])
    lines = [f"{PRIORITY_MARK[priority]} <b>{esc(best.symbol)}</b> — {KIND_LABELS[best.kind]}"]
    shared = shared_venue(legs)
    if shared is not None:
        lines.append(_group_headline(best.kind, shared[0], shared[1], len(legs)))
    lines.append("")
    lines += [_fit(grouped_leg_line(i, n, closed.get(n.opportunity_id))) for i, n in enumerate(legs, start=1)]
    lines.append("")
    lines.append(_("Best route (1):"))
    if best.kind is OpportunityKind.SPOT_SPREAD:
        lines += _spot_lines(best)
        lines += transfer_lines(best.transfer_network, best.transfer_bps, best.transfer_unknown)
    elif best.kind is OpportunityKind.FUNDING_RATE:
        lines += _funding_lines(best, tz, now)
    first = min(n.detected_at for n in legs)
    detected = _("Detected {time}").format(time=fmt_time(first, tz, seconds=True))
    lines.append(detected + (f" · {fmt_ago(now - first)}" if now is not None else ""))
    if all(n.opportunity_id in closed for n in legs):
        lines.append(_("✅ Every route has closed."))
    lines.append(_("Tap a number for details."))
    return _fit("\n".join(lines))


# -- missed while delayed --


def _missed_delay(seconds: int) -> str:
    if seconds <= 0:
        return _("live")
    return _("{delay} delay").format(delay=fmt_duration(timedelta(seconds=seconds)))


def _missed_edge(item: MissedItem) -> str:
    if item.kind == OpportunityKind.FUNDING_RATE and item.net_apr is not None:
        return _("{apr} net").format(apr=fmt_apr(item.net_apr))
    return _("{bps} net").format(bps=fmt_bps(item.net_bps))


def _missed_offer(offer: UpgradeOffer, total: int) -> str:
    tier = tier_label(offer.tier)
    if offer.shown >= total:
        if offer.delay_s <= 0:
            return _("{tier} shows them all live").format(tier=tier)
        return _("{tier} ({delay}) would have shown them all").format(
            tier=tier, delay=_missed_delay(offer.delay_s)
        )
    if offer.delay_s <= 0:
        return ngettext(
            "{tier} would have shown {n} of them live",
            "{tier} would have shown {n} of them live",
            offer.shown,
        ).format(tier=tier, n=offer.shown)
    return ngettext(
        "{tier} ({delay}) would have shown {n} of them",
        "{tier} ({delay}) would have shown {n} of them",
        offer.shown,
    ).format(tier=tier, delay=_missed_delay(offer.delay_s), n=offer.shown)


def missed_digest(digest: MissedDigest, *, tz: str = "UTC") -> str:
    """The "missed while delayed" digest (HTML, one message): what closed before the tier
    delay was over, best edge first, each with its edge and how long it lasted, then which
    tier would have shown it and where to upgrade. Rendered in ``digest.language``."""
    with use_locale(digest.language):
        n = len(digest.items)
        title = _("Missed while delayed") if digest.cadence == "daily" else _("Missed this hour")
        lines = [
            f"🕑 <b>{title}</b>",
            ngettext(
                "{n} opportunity closed before your {tier} delay ({delay}) was over:",
                "{n} opportunities closed before your {tier} delay ({delay}) was over:",
                n,
            ).format(
                n=n, tier=tier_label(digest.tier), delay=fmt_duration(timedelta(seconds=digest.delay_s))
            ),
            "",
        ]
        for item in digest.items[:MISSED_LINES]:
            legs = " → ".join(esc(x) for x in (item.buy_exchange, item.sell_exchange) if x)
            lasted = _("lasted {duration}").format(duration=fmt_duration(timedelta(seconds=item.lifetime_s)))
            lines.append(
                f"• <b>{esc(item.symbol)}</b> {legs} · {esc(_missed_edge(item))} · {lasted}".replace(
                    "  ", " "
                )
            )
        if n > MISSED_LINES:
            more = n - MISSED_LINES
            lines.append(ngettext("… and {n} more", "… and {n} more", more).format(n=more))
        lines.append("")
        if digest.offers:
            offers = "; ".join(_missed_offer(o, n) for o in digest.offers)
            lines.append(_("⭐ {offers}: /subscription").format(offers=offers))
        else:
            lines.append(_("⭐ Faster plans: /subscription"))
        if digest.cadence == "daily":
            at = f"{digest.hour:02d}:00 {tz}"
            lines.append(
                "<i>"
                + esc(
                    _(
                        "Daily at {time}. Change it: /settings digest HOUR (0-23), or /settings digest off"
                    ).format(time=at)
                )
                + "</i>"
            )
        else:
            lines.append("<i>" + esc(_("Every hour. Turn it off: /settings digest off")) + "</i>")
        return _fit("\n".join(lines))


MISSED_LINES = 20
"""At most this many opportunities listed in one digest (the rest are counted)."""


def digest_setting(hour: int | None, tz: str, *, cadence: str | None) -> str:
    """``/settings digest``: what is set, and how to change it."""
    if hour is None:
        state = _('The "missed while delayed" digest is off.')
    elif cadence == "hourly":
        state = _('Your plan gets the "missed while delayed" digest every hour.')
    elif cadence is None:
        state = _("Your plan shows opportunities live: there is nothing to miss, so no digest.")
    else:
        state = _('The "missed while delayed" digest comes daily at {time}.').format(
            time=f"{hour:02d}:00 {tz}"
        )
    return (
        esc(state) + "\n" + esc(_("Set the hour: /settings digest 0-23 · turn it off: /settings digest off"))
    )


def digest_set(hour: int | None, tz: str) -> str:
    if hour is None:
        return esc(_('The "missed while delayed" digest is off. Turn it on: /settings digest 9'))
    return esc(
        _('The "missed while delayed" digest now comes daily at {time}.').format(time=f"{hour:02d}:00 {tz}")
    )


def digest_usage() -> str:
    return esc(_("Use /settings digest HOUR (0-23) or /settings digest off."))
