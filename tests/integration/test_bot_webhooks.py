"""``/webhooks`` end to end in-process: real Redis, the Telegram sandbox, a real aiogram ``Bot``
(the harness of test_bot.py): the tier gate, the address check at registration, the secret
shown once, the list masked, remove, the audit rows, and the session-first gate."""

from __future__ import annotations

import re

from core.accounts import Tier
from core.outbound import sign
from tests.integration.test_bot import ALICE, BOB, Harness, h  # noqa: F401 - the fixture

LOOPBACK_URL = "http://127.0.0.1:9/hook"


def _allow_loopback(h: Harness, allowed: bool) -> None:  # noqa: F811
    outbound = h.deps.settings.outbound.model_copy(
        update={"allow_private": ["127.0.0.0/8"] if allowed else []}
    )
    h.deps.settings = h.deps.settings.model_copy(update={"outbound": outbound})


async def test_webhooks_add_is_premium_only_checks_the_address_and_shows_the_secret_once(h: Harness) -> None:  # noqa: F811
    # without a session: the gate offers /start, nothing is stored
    await h.send(ALICE, f"/webhooks add {LOOPBACK_URL}")
    assert "active session" in (await h.last(ALICE))["text"]
    await h.start(ALICE)
    # Free: a clear upgrade message
    await h.send(ALICE, "/webhooks add https://example.com/hook")
    text = (await h.last(ALICE))["text"]
    assert "/webhooks needs the Premium tier" in text and "/subscription" in text
    assert h.deps.webhooks is not None and await h.deps.webhooks.of_user(ALICE) == []
    await h.send(ALICE, "/help")
    assert "/webhooks" not in (await h.last(ALICE))["text"]
    await h.deps.users.update_fields(ALICE, tier=Tier.PREMIUM)
    await h.send(ALICE, "/help")
    assert "/webhooks — your pushes POSTed" in (await h.last(ALICE))["text"]
    # loopback without the admin setting: refused at registration
    _allow_loopback(h, False)
    await h.send(ALICE, f"/webhooks add {LOOPBACK_URL}")
    assert "Not added" in (text := (await h.last(ALICE))["text"]) and "loopback" in text, text
    for url, why in [
        ("http://[::1]:9/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]:9/", "loopback"),
        ("https://10.0.0.1/hook", "private network"),
        ("https://169.254.169.254/latest", "link-local"),
        ("ftp://example.com/", "https://"),
        ("https://user:pw@example.com/", "user name"),
    ]:
        await h.send(ALICE, f"/webhooks add {url}")
        assert why in (await h.last(ALICE))["text"], url
    assert await h.deps.webhooks.of_user(ALICE) == []
    # with it: added, and the secret is in that one reply
    _allow_loopback(h, True)
    await h.send(ALICE, f"/webhooks add {LOOPBACK_URL}")
    added = (await h.last(ALICE))["text"]
    (endpoint,) = await h.deps.webhooks.of_user(ALICE)
    assert endpoint.url == LOOPBACK_URL and endpoint.secret in added and endpoint.id in added
    assert sign(endpoint.secret, b"{}").startswith("sha256=")
    # the list masks it
    await h.send(ALICE, "/webhooks")
    listing = (await h.last(ALICE))["text"]
    assert endpoint.id in listing and endpoint.secret not in listing and endpoint.masked_secret() in listing
    assert sum(endpoint.secret in t for t in await h.texts(ALICE)) == 1  # shown once
    # another user cannot remove it; its owner can
    await h.start(BOB)
    await h.send(BOB, f"/webhooks remove {endpoint.id}")
    assert "no webhook" in (await h.last(BOB))["text"]
    await h.send(ALICE, f"/webhooks remove {endpoint.id}")
    assert "removed" in (await h.last(ALICE))["text"]
    assert await h.deps.webhooks.of_user(ALICE) == [] and await h.deps.webhooks.users() == {}
    audit = [
        (r["action"], r["ok"], r["detail"]) for r in h.events.rows("audit") if r["action"] == "/webhooks"
    ]
    assert ("/webhooks", False, "tier") in audit
    assert ("/webhooks", False, "refused:loopback") in audit
    assert ("/webhooks", True, f"add {endpoint.id}") in audit
    assert ("/webhooks", True, f"remove {endpoint.id}") in audit
    assert not any(endpoint.secret in d for _, _, d in audit)


async def test_webhooks_limit_enable_and_private_chats_only(h: Harness) -> None:  # noqa: F811
    await h.start(ALICE)
    await h.deps.users.update_fields(ALICE, tier=Tier.PREMIUM)
    _allow_loopback(h, True)
    limit = h.deps.settings.outbound.max_endpoints
    for i in range(limit + 1):
        await h.send(ALICE, f"http://127.0.0.1:{9000 + i}/h".join(["/webhooks add ", ""]))
    assert "the most allowed" in (await h.last(ALICE))["text"]
    endpoints = await h.deps.webhooks.of_user(ALICE)  # type: ignore[union-attr]
    assert len(endpoints) == limit
    first = endpoints[0]
    await h.deps.webhooks.set_enabled(first.id, False, reason="5 failed deliveries in a row")  # type: ignore[union-attr]
    await h.send(ALICE, "/webhooks")
    assert "disabled: 5 failed deliveries in a row" in (await h.last(ALICE))["text"]
    await h.send(ALICE, f"/webhooks enable {first.id}")
    assert "on again" in (await h.last(ALICE))["text"]
    again = await h.deps.webhooks.get(first.id)  # type: ignore[union-attr]
    assert again is not None and not again.disabled and again.failures == 0
    await h.send(ALICE, f"/webhooks test {first.id}")
    assert "not running" in (await h.last(ALICE))["text"]  # no sender in this harness
    # in a group: refused (the secret is never shown there)
    group = -100_777
    await h.send(ALICE, "/webhooks", chat_id=group)
    assert re.search("private chat", (await h.last(group))["text"])
