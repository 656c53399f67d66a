"""``/webhooks``: outbound webhooks (bot.routers.webhooks) and the notice of a disabled endpoint
(actors.outbound). docs/outbound-webhooks.md is the reference the texts point to."""

from __future__ import annotations

from collections.abc import Sequence

from core.outbound import Endpoint
from notify.i18n import _
from notify.texts.base import esc, fmt_dt


def refusal(reason: str) -> str:
    texts = {
        "bad_url": _("that is not a URL I can use"),
        "scheme": _("only https:// URLs are accepted"),
        "https_required": _("only https:// URLs are accepted"),
        "credentials_in_url": _("a URL must not carry a user name or password"),
        "unresolved": _("its host name does not resolve"),
        "loopback": _("it points to this machine (loopback)"),
        "private": _("it points to a private network"),
        "link_local": _("it points to a link-local address"),
        "multicast": _("it points to a multicast address"),
        "reserved": _("it points to a reserved address"),
        "unspecified": _("it points to an unspecified address"),
        "not_global": _("it points to an address that is not public"),
        "tunnel": _("it points to a tunnelled (6to4/Teredo) address"),
        "bad_address": _("its host resolves to an address I cannot read"),
    }
    return texts.get(reason, esc(reason))


def webhooks_usage() -> str:
    return _(
        "Add: <code>/webhooks add https://your.host/path</code>\n"
        "Remove: <code>/webhooks remove ID</code>\n"
        "Turn back on after it was disabled: <code>/webhooks enable ID</code>\n"
        "Try: <code>/webhooks test ID</code>\n"
        "Each push is also POSTed there as signed JSON (schema arbflow.push/1)."
    )


def webhooks_list(endpoints: Sequence[Endpoint], tz: str = "UTC") -> str:
    if not endpoints:
        return _("<b>Your webhooks</b>\nNone yet.") + "\n\n" + webhooks_usage()
    lines = [_("<b>Your webhooks</b>")]
    for e in endpoints:
        state = (
            _("disabled: {reason}").format(reason=esc(e.disabled_reason or "-"))
            if e.disabled
            else _("active, {n} delivered").format(n=e.delivered)
        )
        lines.append(
            _("• <code>{id}</code> {url}\n  secret <code>{secret}</code>, added {added}, {state}").format(
                id=esc(e.id),
                url=esc(e.url),
                secret=esc(e.masked_secret()),
                added=fmt_dt(e.created_at, tz),
                state=state,
            )
        )
    return "\n".join(lines) + "\n\n" + webhooks_usage()


def webhook_added(endpoint: Endpoint) -> str:
    return _(
        "🔗 Webhook <code>{id}</code> added: {url}\n\n"
        "Its signing secret, shown this once (keep it; I will only show it masked):\n"
        "<code>{secret}</code>\n\n"
        "Every push is POSTed as JSON with the header X-Arbflow-Signature: sha256= and the "
        "HMAC-SHA256 of the body with this secret. Check it with /webhooks test {id}."
    ).format(id=esc(endpoint.id), url=esc(endpoint.url), secret=esc(endpoint.secret))


def webhook_refused(url: str, reason: str) -> str:
    return _("⛔ Not added: {url} — {why}.").format(url=esc(url), why=refusal(reason))


def webhook_limit(n: int) -> str:
    return _("⛔ You have {n} webhooks already, the most allowed. Remove one first.").format(n=n)


def webhook_removed(endpoint_id: str) -> str:
    return _("🗑 Webhook <code>{id}</code> removed.").format(id=esc(endpoint_id))


def webhook_enabled(endpoint_id: str) -> str:
    return _("✅ Webhook <code>{id}</code> is on again.").format(id=esc(endpoint_id))


def webhook_unknown(endpoint_id: str) -> str:
    return _("You have no webhook <code>{id}</code>. /webhooks lists yours.").format(id=esc(endpoint_id))


def webhook_tested(endpoint_id: str, ok: bool, status: int | None, error: str | None) -> str:
    if ok:
        return _("✅ Webhook <code>{id}</code> answered {status}.").format(id=esc(endpoint_id), status=status)
    if error and error.startswith("refused:"):
        return _("⛔ Webhook <code>{id}</code> was not called: {why}.").format(
            id=esc(endpoint_id), why=refusal(error.split(":", 1)[1])
        )
    return _("⚠️ Webhook <code>{id}</code> failed: {error}.").format(
        id=esc(endpoint_id), error=esc(error or str(status))
    )


def webhook_test_unavailable() -> str:
    return _("The webhook sender is not running right now: try again later.")


def webhook_disabled(endpoint_id: str, url: str, reason: str) -> str:
    return _(
        "⚠️ Your webhook <code>{id}</code> ({url}) is disabled: {reason}. "
        "Pushes still reach you here. Fix the receiver, then send /webhooks enable {id}."
    ).format(id=esc(endpoint_id), url=esc(url), reason=esc(reason))


__all__ = [
    "refusal",
    "webhook_added",
    "webhook_disabled",
    "webhook_enabled",
    "webhook_limit",
    "webhook_refused",
    "webhook_removed",
    "webhook_test_unavailable",
    "webhook_tested",
    "webhooks_list",
    "webhooks_usage",
]
