"""Texts of /settings (every menu and setting) and /apikeys (adding, listing, the read-only
check)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from core.accounts import Preferences, TierPolicy, User
from core.models import OpportunityKind
from notify.i18n import _, lazy

if TYPE_CHECKING:
    pass
from notify.texts.base import (
    _CONSTANTS,
    KIND_LABELS,
    Translated,
    esc,
    fmt_dt,
    fmt_hours,
    fmt_usd,
    language_name,
    on_off,
    thresholds_text,
)

# -- settings -------------------------------------------------------------------------------


def settings_text(prefs: Preferences, policy: TierPolicy) -> str:
    kinds = ", ".join(KIND_LABELS[k] for k in OpportunityKind if k in prefs.kinds) or _("none")
    exchanges = ", ".join(sorted(prefs.exchanges)) if prefs.exchanges else _("all")
    symbols = ", ".join(sorted(prefs.symbols)) if prefs.symbols else _("all")
    return "\n".join(
        [
            _("<b>Settings</b> — tap to change"),
            _("Alerts: <b>{state}</b>").format(state=on_off(prefs.pushes_on)),
            _("Kinds: {kinds}").format(kinds=esc(kinds)),
            _("Exchanges: {exchanges}").format(exchanges=esc(exchanges)),
            _("Symbols: {symbols}").format(symbols=esc(symbols)),
            _("Blocked: {blocked}").format(blocked=esc(blocked_text(prefs))),
            _("Minimums: {minimums}; size {size}").format(
                minimums=esc(thresholds_text(prefs)), size=esc(min_size_text(prefs.min_size_usd))
            ),
            _("Time zone: {zone}").format(zone=esc(prefs.timezone)),
            _("Active hours: {hours}; outside them: {outside}").format(
                hours=fmt_hours(prefs.active_hours), outside=esc(outside_label(prefs.outside_hours))
            ),
            _("Only exchanges I hold keys for: {answer}").format(
                answer=_("yes") if prefs.only_my_exchanges else _("no")
            ),
            _("Language: {language}").format(language=language_name(prefs.language)),
        ]
    )


def outside_label(value: str) -> str:
    """What happens to alerts outside the active hours (``hold`` or ``silent``)."""
    return {"hold": _("hold"), "silent": _("silent")}.get(value, value)


SETTINGS_MENUS: Mapping[str, str] = Translated(
    {
        "kinds": lazy("<b>Kinds</b> — tap to toggle (🔒 needs a higher tier)"),
        "exch": lazy("<b>Exchanges</b> — none selected means all"),
        "sym": lazy("<b>Symbols</b> — alerts only for the ones you tick; none selected means all"),
        "minp": lazy(
            "<b>Minimum profit, per kind</b>\n"
            "spread: net edge after fees, bps · funding: net % APR · signal: confidence"
        ),
        "tz": lazy(
            "<b>Time zone</b>\nNot listed? Send <code>/settings tz Area/City</code>, "
            "e.g. <code>/settings tz Europe/Paris</code> (any IANA zone; a city alone works)."
        ),
        "hours": lazy("<b>Active hours</b> (local time)"),
        "lang": lazy(
            "<b>Language</b>\nBy default I speak your Telegram app's language. "
            "Also: <code>/settings language ru</code>, <code>/settings language en</code>, "
            "<code>/settings language auto</code>."
        ),
    }
)


def unknown_timezone(typed: str, suggestions: Sequence[str]) -> str:
    if not typed.strip():
        return _("Send <code>/settings tz Area/City</code>, e.g. <code>/settings tz Asia/Tokyo</code>.")
    hint = (
        _("Did you mean {zones}?").format(zones=", ".join(f"<code>{esc(z)}</code>" for z in suggestions))
        if suggestions
        else _("Use an IANA name such as <code>Europe/Berlin</code> or <code>America/New_York</code>.")
    )
    return _("I don't know the time zone <b>{typed}</b>. {hint}").format(
        typed=esc(typed.strip()[:64]), hint=hint
    )


def blocked_text(prefs: Preferences) -> str:
    names = sorted(prefs.blocked_exchanges) + sorted(prefs.blocked_symbols)
    return ", ".join(names) if names else _("nothing")


def blocked_now(prefs: Preferences) -> str:
    return _(
        "🚫 Blocked: <b>{blocked}</b>. No alert with a leg on a blocked exchange "
        "or about a blocked symbol. <code>/settings unblock NAME</code> takes one off."
    ).format(blocked=esc(blocked_text(prefs)))


def blocked_usage(exchanges: Sequence[str]) -> str:
    return _(
        "Block an exchange ({exchanges}) or a symbol: "
        "<code>/settings block bybit</code>, <code>/settings block DOGE/USDT</code>; "
        "<code>/settings unblock NAME</code> takes one off."
    ).format(exchanges=esc(", ".join(exchanges)))


def min_size_text(size: Decimal) -> str:
    return _("any") if not size else f"≥ {fmt_usd(float(size))}"


_CONSTANTS["MIN_SIZE_USAGE"] = lambda: _(
    "Send <code>/settings minsize 5000</code>: alerts only when at least that many USD can be "
    "traded at the edge (0: any size). Signals have no size and are not filtered by it."
)


def min_size_set(size: Decimal) -> str:
    return _("📏 Minimum executable size: <b>{size}</b>.").format(size=esc(min_size_text(size)))


def region_shown(region: str | None) -> str:
    now = f"<b>{esc(region)}</b>" if region else _("not set")
    return _(
        "Your region: {region}. Set it with <code>/settings region XX</code> (a two-letter country "
        "code such as <code>DE</code>), clear it with <code>/settings region none</code>."
    ).format(region=now)


def region_set(region: str | None) -> str:
    return (
        _("🌍 Region set to <b>{region}</b>.").format(region=esc(region))
        if region
        else _("🌍 Region cleared.")
    )


def region_locked(region: str | None) -> str:
    return _("Your region ({region}) was set by an admin and cannot be changed here.").format(
        region=esc(region or _("none"))
    )


def bad_region(typed: str) -> str:
    return _(
        "<b>{typed}</b> is not a country code: use two letters (ISO 3166-1), "
        "e.g. <code>/settings region DE</code>."
    ).format(typed=esc(typed[:16]))


def language_set(language: str | None) -> str:
    """``/settings language``: the new setting (``None``: follow the Telegram app)."""
    if language is None:
        return _("🗣 Language: as in your Telegram app.")
    return _("🗣 Language set to <b>{language}</b>.").format(language=language_name(language))


def bad_language(typed: str) -> str:
    from notify.i18n import LANGUAGES

    return _("I don't speak <b>{typed}</b> yet. Choose one of: {codes}, or <code>auto</code>.").format(
        typed=esc(typed[:16]), codes=", ".join(f"<code>{c}</code>" for c in LANGUAGES)
    )


def admin_beta_set(user_id: int, flags: Sequence[str]) -> str:
    shown = ", ".join(esc(f) for f in flags) if flags else _("none")
    return _("User {user}: beta flags <b>{flags}</b>.").format(user=user_id, flags=shown)


def admin_region_set(user_id: int, region: str | None) -> str:
    if region is None:
        return _("User {user}: region cleared (they may set one again).").format(user=user_id)
    return _("User {user}: region <b>{region}</b> (set by an admin: they cannot change it).").format(
        user=user_id, region=esc(region)
    )


def timezone_set(zone: str, now: datetime) -> str:
    return _("🕒 Time zone set to <b>{zone}</b>: it is {now} there.").format(
        zone=esc(zone), now=fmt_dt(now, zone)
    )


def kind_locked(kind: OpportunityKind) -> str:
    return _("{kind} need a higher tier — see /subscription.").format(kind=KIND_LABELS[kind])


_CONSTANTS["SAVED"] = lambda: _("Saved")


# -- API keys -------------------------------------------------------------------------------


def apikeys_list(user: User) -> str:
    if not user.api_keys:
        return _("<b>Your API keys</b>\nNone yet.") + "\n\n" + apikeys_usage()
    lines = [_("<b>Your API keys</b>")]
    for ex, key in sorted(user.api_keys.items()):
        lines.append(
            _("• {exchange}: <code>{key}</code> (added {added})").format(
                exchange=esc(ex), key=esc(key.key_masked), added=fmt_dt(key.added_at)
            )
        )
    return "\n".join(lines) + "\n\n" + apikeys_usage()


def apikeys_usage() -> str:
    return _(
        "Add: <code>/apikeys add &lt;exchange&gt; &lt;key&gt;</code> (a read-only key; the message "
        "is deleted at once and only the masked key is kept). Remove: the buttons below."
    )


def apikey_added(exchange: str, masked: str, deleted: bool) -> str:
    note = "" if deleted else "\n" + _("⚠️ I couldn't delete your message: please delete it yourself.")
    return (
        _(
            "🔐 <b>{exchange}</b> added (<code>{key}</code>): alerts can be limited to "
            'the exchanges you hold keys for (/settings, "Only my exchanges"). I keep only the '
            "exchange and this masked key — nothing I do uses your secret, so it was not stored."
        ).format(exchange=esc(exchange), key=esc(masked))
        + note
    )


def apikey_removed(exchange: str) -> str:
    return _("Key for {exchange} removed.").format(exchange=esc(exchange))


def unknown_exchange(exchange: str, known: Iterable[str]) -> str:
    return _("{exchange} isn't available. Exchanges: {known}.").format(
        exchange=esc(exchange), known=esc(", ".join(known))
    )


# -- API key checks -------------------------------------------------------------------------
# (``/apikeys add`` asks the exchange what the key may do: pipeline/sources/permissions.py)


def apikey_not_deleted(deleted: bool) -> str:
    """A note to add when the message holding the key could not be deleted."""
    return "" if deleted else "\n⚠️ " + _("I couldn't delete your message: please delete it yourself.")


def apikeys_add_usage() -> str:
    return _(
        "Send <code>/apikeys add &lt;exchange&gt; &lt;key&gt; &lt;secret&gt;</code> "
        "(okx: add the passphrase after the secret). I need the secret once, to ask the "
        "exchange what the key may do; it is not stored."
    )


def apikey_read_only(exchange: str) -> str:
    return _("✅ Checked with {exchange}: this key is read-only.").format(exchange=esc(exchange))


def apikey_refused_permissions(exchange: str, permissions: Sequence[str]) -> str:
    """A key that can trade, withdraw or move funds: refused, naming what to turn off."""
    listed = "\n".join(f"• {esc(p)}" for p in permissions)
    return (
        _(
            "⛔ Not added: this {exchange} key can do more than read. I accept read-only keys "
            "only. Turn these permissions off in the key's settings on {exchange} (or create "
            "a new key with read permission only), then send it again:"
        ).format(exchange=esc(exchange))
        + "\n"
        + listed
    )


def apikey_rejected(exchange: str) -> str:
    return _(
        "⛔ Not added: {exchange} refused this key. Check the key and the secret "
        "(okx: and the passphrase), then send them again."
    ).format(exchange=esc(exchange))


def apikey_unverified(exchange: str) -> str:
    return _(
        "⛔ Not added: I could not verify this key — {exchange} did not answer. I add a key "
        "only after the exchange confirms it is read-only; please try again in a few minutes."
    ).format(exchange=esc(exchange))


def apikey_unsupported(exchange: str) -> str:
    return _(
        "⛔ Not added: {exchange} does not let me check a key's permissions, and I accept "
        "only keys I have verified as read-only."
    ).format(exchange=esc(exchange))
