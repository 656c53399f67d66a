"""Texts of /admin, of groups, and the operator alerts sent to SuperAdmins."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from core.accounts import Tier
from core.alerts import AlertKind, AlertNotice, NoticeEvent
from notify.i18n import _, lazy

if TYPE_CHECKING:
    from pipeline.analytics import DeliveryFigures
from notify.texts.base import (
    _CONSTANTS,
    Translated,
    _fit,
    constant,
    esc,
    fmt_bps,
    fmt_dt,
    fmt_duration,
    na,
    on_off,
    tier_label,
)

# -- admin ----------------------------------------------------------------------------------

_CONSTANTS["ADMIN_ONLY"] = lambda: _("This command is for SuperAdmins.")
_CONSTANTS["ADMIN_USAGE"] = lambda: _(
    "<b>/admin</b> — stats\n<code>/admin tier &lt;user_id&gt; &lt;tier&gt;</code>\n"
    "<code>/admin broadcast &lt;text&gt;</code>\n"
    "<code>/admin why &lt;user_id&gt; &lt;opportunity_id&gt;</code>\n"
    "<code>/admin region &lt;user_id&gt; &lt;XX|none&gt;</code> — the user's country, for region rules\n"
    "<code>/admin beta &lt;user_id&gt; &lt;flag&gt; [off]</code> — beta features the user may receive\n"
    "<code>/admin replay [n]</code> — dead letters back into their queues"
)

LAYER_NAMES: Mapping[int, str] = Translated(
    {
        0: lazy("eligible"),
        1: lazy("1 · session"),
        2: lazy("2 · subscription"),
        3: lazy("3 · preferences"),
        4: lazy("4 · rate limits"),
        5: lazy("5 · technical"),
        6: lazy("6 · context"),
    }
)


def admin_why(user_id: int, opportunity: Mapping[str, Any], layer: int, reason: str) -> str:
    """``/admin why``: the eligibility layer that decides one user for one opportunity."""
    what = (
        f"{esc(str(opportunity.get('kind', '')))} {esc(str(opportunity.get('symbol', '')))} "
        f"{esc(str(opportunity.get('buy_exchange') or ''))} → "
        f"{esc(str(opportunity.get('sell_exchange') or ''))}"
    )
    verdict = (
        _("✅ <b>eligible</b>: it would be pushed")
        if layer == 0
        else _("⛔ decided by layer <b>{layer}</b>: <code>{reason}</code>").format(
            layer=esc(LAYER_NAMES.get(layer, str(layer))), reason=esc(reason)
        )
    )
    return "\n".join(
        [
            _("<b>Admin · why</b> user <code>{user}</code>").format(user=user_id),
            _("Opportunity <code>{id}</code>: {what}").format(
                id=esc(str(opportunity.get("opportunity_id", ""))), what=what
            ),
            verdict,
        ]
    )


def admin_replayed(replayed: int | None, left: int) -> str:
    if replayed is None:
        return _("No distributor is running: {left} dead letters wait for one.").format(left=left)
    return _("Replayed {n} dead letters into their queues; {left} left.").format(n=replayed, left=left)


def admin_no_opportunity(opportunity_id: str) -> str:
    return _("No open opportunity <code>{id}</code>.").format(id=esc(opportunity_id))


def admin_stats(users: int, sessions: int, groups: int, deliveries: DeliveryFigures | None, opps: int) -> str:
    """``/admin``: Redis figures, then today's deliveries from the lake (n/a when unreadable)."""
    lines = [
        _("<b>Admin · stats</b>"),
        _("Users: {n}").format(n=users),
        _("Active sessions: {n}").format(n=sessions),
        _("Groups: {n}").format(n=groups),
        _("Open opportunities: {n}").format(n=opps),
    ]
    if deliveries is None:
        lines.append(_("Deliveries today: {n}").format(n=na()))
    else:
        d = deliveries
        rate = na() if d.engagement_rate is None else f"{100 * d.engagement_rate:.1f}%"
        p99 = na() if d.p99_ms is None else _("{v} ms").format(v=f"{d.p99_ms:,.0f}")
        lines += [
            _("Deliveries today: {n} (sent {sent} · skipped {skipped})").format(
                n=d.deliveries, sent=d.sent, skipped=d.skipped
            ),
            _("429s today: {n}").format(n=d.throttled_429),
            _("Engagement today: {rate}").format(rate=rate),
            _("Delivery p99 today: {p99}").format(p99=p99),
        ]
    return "\n".join([*lines, "", constant("ADMIN_USAGE")])


def admin_tier_set(user_id: int, tier: Tier) -> str:
    return _("User {user} is now <b>{tier}</b>.").format(user=user_id, tier=tier_label(tier))


def admin_no_user(user_id: str) -> str:
    return _("No user {user}.").format(user=esc(user_id))


def admin_bad_tier(value: str) -> str:
    tiers = ", ".join(f"<code>{t.value}</code>" for t in Tier if t is not Tier.SUPERADMIN)
    return _(
        "Not a tier you can set: {value}. One of: {tiers} "
        "(SuperAdmins come from <code>ARBFLOW_SUPERADMIN_IDS</code>)."
    ).format(value=esc(value), tiers=tiers)


def broadcast_body(text: str) -> str:
    return _("📣 <b>Announcement</b>") + "\n" + esc(text)


def broadcast_done(sent: int, failed: int) -> str:
    return _("Broadcast sent to {sent} chats ({failed} failed).").format(sent=sent, failed=failed)


def tier_changed(tier: Tier) -> str:
    return _("Your tier is now <b>{tier}</b>. /help shows what that unlocks.").format(tier=tier_label(tier))


# -- groups ---------------------------------------------------------------------------------


def group_welcome(title: str) -> str:
    return _(
        "Hi {title}! I post arbitrage alerts. Each member opts in with /start in a "
        "private chat; group admins change this group's settings with /settings."
    ).format(title=esc(title) or _("all"))


_CONSTANTS["GROUP_ADMINS_ONLY"] = lambda: _("Only this group's admins can change its settings.")


def group_settings_text(title: str, pushes_on: bool, min_net_bps: int) -> str:
    return _(
        "<b>Group settings · {title}</b>\n"
        "Alerts in this group: <b>{state}</b>\n"
        "Min net edge of spot spreads: {edge}"
    ).format(title=esc(title), state=on_off(pushes_on), edge=fmt_bps(min_net_bps))


_CONSTANTS["GROUP_UNKNOWN"] = lambda: _("This group isn't registered yet: remove me and add me again.")


# -- operator alerts (SuperAdmins) -----------------------------------------------------------

ALERT_TITLES: Mapping[AlertKind, str] = Translated(
    {
        AlertKind.STALE_DATA: lazy("stale market data"),
        AlertKind.INGEST_LAG: lazy("ingest lag"),
        AlertKind.DELIVERY_FAILURES: lazy("delivery failures"),
        AlertKind.RATE_LIMITED: lazy("Telegram 429s"),
        AlertKind.SOURCE_DOWN: lazy("market source cannot start"),
    }
)


def fmt_alert_value(kind: AlertKind, value: float) -> str:
    if kind is AlertKind.DELIVERY_FAILURES:
        return f"{value:.0%}"
    if kind is AlertKind.RATE_LIMITED:
        return f"{value:.0f}"
    return _("{v} s").format(v=f"{value:.0f}" if value >= 10 else f"{value:.1f}")


def _alert_fact(kind: AlertKind, value: float, threshold: float, window_s: float | None) -> str:
    window = (
        " " + _("in the last {duration}").format(duration=fmt_duration(timedelta(seconds=window_s)))
        if window_s
        else ""
    )
    v, th = fmt_alert_value(kind, value), fmt_alert_value(kind, threshold)
    if kind is AlertKind.STALE_DATA:
        return _("No market data for {v} (threshold {th}).").format(v=v, th=th)
    if kind is AlertKind.INGEST_LAG:
        return _("Data arrives {v} after the exchange's timestamp (threshold {th}).").format(v=v, th=th)
    if kind is AlertKind.DELIVERY_FAILURES:
        return _("{v} of pushes failed{window} (threshold {th}).").format(v=v, window=window, th=th)
    if kind is AlertKind.SOURCE_DOWN:
        return _("The exchange's market source has failed to start for {v}; it keeps retrying.").format(v=v)
    return _("{v} rate-limit answers (429){window} (threshold {th}).").format(v=v, window=window, th=th)


def alert_notice(notice: AlertNotice, *, window_s: float | None = None) -> str:
    """An incident opened or resolved, for the SuperAdmins (one message per event)."""
    inc = notice.incident
    title = f"{ALERT_TITLES[inc.kind]} · <code>{esc(inc.subject)}</code>"
    if notice.event is NoticeEvent.OPENED:
        lines = [
            _("🚨 <b>Alert: {title}</b>").format(title=title),
            _alert_fact(inc.kind, inc.value, inc.threshold, window_s),
            _("Since {since}. You will hear again when it clears.").format(since=fmt_dt(inc.opened_at)),
        ]
    else:
        lasted = fmt_duration(notice.at - inc.opened_at)
        lines = [
            _("✅ <b>Resolved: {title}</b>").format(title=title),
            _("Lasted {lasted}; worst {worst}, now {now}.").format(
                lasted=lasted,
                worst=fmt_alert_value(inc.kind, inc.peak),
                now=fmt_alert_value(inc.kind, inc.last_value),
            ),
        ]
    lines.append(_("<i>incident {id}</i>").format(id=esc(inc.id)))
    return _fit("\n".join(lines))
