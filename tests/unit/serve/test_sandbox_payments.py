"""The sandbox's Telegram Stars payments: sendInvoice, a user paying (pre-checkout, then the
successful payment), answerPreCheckoutQuery and refundStarPayment, driven by aiogram's real
``Bot`` and by raw Bot API calls for the errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import LabeledPrice, Update
from aiohttp import ClientSession, web

from serve.standins.sandbox import SandboxHandle, start_sandbox

pytestmark = pytest.mark.timeout(60)
USER = 701


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxHandle]:
    async with await start_sandbox(webhook_backoff=0.05, webhook_timeout=5.0) as handle:
        yield handle


@pytest.fixture
async def bot(sandbox: SandboxHandle) -> AsyncIterator[Bot]:
    bot = Bot(sandbox.token, session=AiohttpSession(api=TelegramAPIServer.from_base(sandbox.base_url)))
    yield bot
    await bot.session.close()


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


async def raw(http: ClientSession, sandbox: SandboxHandle, method: str, **params: Any) -> tuple[int, Any]:
    async with http.post(sandbox.method_url(method), json=params) as resp:
        return resp.status, await resp.json()


async def control(http: ClientSession, sandbox: SandboxHandle, path: str, body: Any = None) -> Any:
    url = f"{sandbox.base_url}/sandbox/{path}"
    if body is None:
        async with http.get(url) as resp:
            return await resp.json()
    async with http.post(url, json=body) as resp:
        data = await resp.json()
        data["_status"] = resp.status
        return data


async def invoice(bot: Bot, stars: int = 250, payload: str = "order-1") -> int:
    msg = await bot.send_invoice(
        USER,
        title="arbflow Basic",
        description="Basic tier for 30 days",
        payload=payload,
        currency="XTR",
        prices=[LabeledPrice(label="Basic, 30 days", amount=stars)],
        provider_token="",
    )
    return msg.message_id


async def next_update(bot: Bot, offset: int = 0) -> Update:
    for _ in range(50):
        updates = await bot.get_updates(offset=offset, timeout=0)
        if updates:
            return updates[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no update")


def invoice_params(**changes: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "chat_id": USER,
        "title": "arbflow Basic",
        "description": "Basic tier for 30 days",
        "payload": "order-1",
        "currency": "XTR",
        "prices": [{"label": "Basic", "amount": 250}],
    }
    params.update(changes)
    return {k: v for k, v in params.items() if v is not None}


async def test_send_invoice_returns_a_message_with_the_invoice(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession
) -> None:
    msg = await bot.send_invoice(
        USER,
        title="arbflow Premium",
        description="Premium tier for 30 days",
        payload="p-1",
        currency="XTR",
        prices=[LabeledPrice(label="Premium, 30 days", amount=1000)],
        provider_token="",
    )
    assert msg.invoice is not None
    assert (msg.invoice.title, msg.invoice.description, msg.invoice.currency, msg.invoice.total_amount) == (
        "arbflow Premium",
        "Premium tier for 30 days",
        "XTR",
        1000,
    )
    assert msg.invoice.start_parameter == ""
    listed = (await control(http, sandbox, f"chats/{USER}/messages"))["messages"]
    assert listed[-1]["message"]["invoice"]["total_amount"] == 1000


@pytest.mark.parametrize(
    ("changes", "description"),
    [
        ({"currency": "USD"}, "Bad Request: PAYMENT_PROVIDER_INVALID"),
        ({"provider_token": "284685063:TEST:abc"}, "Bad Request: PAYMENT_PROVIDER_INVALID"),
        ({"title": None}, 'Bad Request: parameter "title" is required'),
        ({"description": None}, 'Bad Request: parameter "description" is required'),
        ({"payload": None}, 'Bad Request: parameter "payload" is required'),
        ({"currency": None}, 'Bad Request: parameter "currency" is required'),
        ({"prices": None}, 'Bad Request: parameter "prices" is required'),
        ({"title": "x" * 33}, "Bad Request: INVOICE_TITLE_INVALID"),
        ({"payload": "x" * 129}, "Bad Request: INVOICE_PAYLOAD_INVALID"),
        (
            {"prices": [{"label": "a", "amount": 1}, {"label": "b", "amount": 2}]},
            "Bad Request: STARS_INVOICE_INVALID",
        ),
        ({"prices": [{"label": "a", "amount": 0}]}, "Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"prices": [{"label": "a", "amount": 2.5}]}, "Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"prices": [{"amount": 5}]}, 'Bad Request: can\'t find field "label"'),
        ({"prices": "not json"}, "Bad Request: can't parse prices JSON object"),
    ],
)
async def test_send_invoice_refuses_bad_invoices_like_the_bot_api(
    sandbox: SandboxHandle, http: ClientSession, changes: dict[str, Any], description: str
) -> None:
    status, body = await raw(http, sandbox, "sendInvoice", **invoice_params(**changes))
    assert status == 400
    assert body == {"ok": False, "error_code": 400, "description": description}
    assert (await control(http, sandbox, f"chats/{USER}/messages"))["messages"] == []


async def test_pay_posts_pre_checkout_then_the_successful_payment_and_refunds_once(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession
) -> None:
    message_id = await invoice(bot)
    paying = asyncio.create_task(control(http, sandbox, "pay", {"user_id": USER, "message_id": message_id}))
    update = await next_update(bot)
    query = update.pre_checkout_query
    assert query is not None and query.from_user.id == USER
    assert (query.currency, query.total_amount, query.invoice_payload) == ("XTR", 250, "order-1")
    assert not paying.done()  # waits for the bot's answer
    assert await bot.answer_pre_checkout_query(query.id, ok=True)
    outcome = await paying
    assert outcome["status"] == "paid" and outcome["_status"] == 200
    update = await next_update(bot, update.update_id + 1)
    assert update.message is not None and update.message.from_user is not None
    paid = update.message.successful_payment
    assert paid is not None and update.message.from_user.id == USER
    assert (paid.currency, paid.total_amount, paid.invoice_payload) == ("XTR", 250, "order-1")
    assert paid.telegram_payment_charge_id == outcome["telegram_payment_charge_id"]
    assert paid.provider_payment_charge_id == outcome["provider_payment_charge_id"]
    assert paid.subscription_expiration_date is None
    # the checkout was answered: a second answer is refused
    with pytest.raises(TelegramBadRequest, match="QUERY_ID_INVALID"):
        await bot.answer_pre_checkout_query(query.id, ok=True)

    charge = paid.telegram_payment_charge_id
    with pytest.raises(TelegramBadRequest, match="USER_ID_INVALID"):
        await bot.refund_star_payment(USER + 1, charge)
    with pytest.raises(TelegramBadRequest, match="CHARGE_ID_INVALID"):
        await bot.refund_star_payment(USER, "stxnope")
    assert await bot.refund_star_payment(USER, charge)
    with pytest.raises(TelegramBadRequest, match="CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(USER, charge)
    update = await next_update(bot, update.update_id + 1)
    assert update.message is not None and update.message.refunded_payment is not None
    assert update.message.refunded_payment.telegram_payment_charge_id == charge
    state = await control(http, sandbox, "payments")
    assert [(c["telegram_payment_charge_id"], c["refunded"]) for c in state["charges"]] == [(charge, True)]


async def test_a_declined_checkout_posts_no_payment(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession
) -> None:
    message_id = await invoice(bot)
    paying = asyncio.create_task(control(http, sandbox, "pay", {"user_id": USER, "message_id": message_id}))
    update = await next_update(bot)
    assert update.pre_checkout_query is not None
    status, body = await raw(
        http, sandbox, "answerPreCheckoutQuery", pre_checkout_query_id=update.pre_checkout_query.id, ok=False
    )
    assert (status, body["description"]) == (400, "Bad Request: ERROR_MESSAGE_EMPTY")
    status, body = await raw(http, sandbox, "answerPreCheckoutQuery", pre_checkout_query_id="123", ok=True)
    assert (status, body["description"]) == (400, "Bad Request: QUERY_ID_INVALID")
    status, body = await raw(http, sandbox, "answerPreCheckoutQuery", pre_checkout_query_id="123")
    assert (status, body["description"]) == (400, 'Bad Request: parameter "ok" is required')
    await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=False, error_message="Sold out")
    outcome = await paying
    assert outcome["status"] == "declined" and outcome["error_message"] == "Sold out"
    assert await bot.get_updates(offset=update.update_id + 1, timeout=0) == []
    assert (await control(http, sandbox, "payments"))["charges"] == []


async def test_an_unanswered_checkout_times_out(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession
) -> None:
    sandbox.sandbox.payments.checkout_timeout_s = 0.3
    message_id = await invoice(bot)
    outcome = await control(http, sandbox, "pay", {"user_id": USER, "message_id": message_id})
    assert outcome["status"] == "timeout"
    update = await next_update(bot)
    assert update.pre_checkout_query is not None
    with pytest.raises(TelegramBadRequest, match="QUERY_ID_INVALID"):  # too late
        await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=True)
    # paying something that is not an invoice is a control-API error
    bad = await control(http, sandbox, "pay", {"user_id": USER, "message_id": 999})
    assert bad["_status"] == 400
    bad = await control(http, sandbox, "pay", {"user_id": USER})
    assert bad["_status"] == 400


async def test_pay_through_a_webhook_answering_in_its_reply(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession
) -> None:
    """Webhook mode: the checkout goes to the webhook, which answers with the method in its
    reply body (as Telegram allows); the payment follows as the next delivery."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        update = await request.json()
        received.append(update)
        if "pre_checkout_query" in update:
            answer = {
                "method": "answerPreCheckoutQuery",
                "pre_checkout_query_id": update["pre_checkout_query"]["id"],
                "ok": True,
            }
            return web.json_response(answer)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        await bot.set_webhook(f"http://127.0.0.1:{port}/hook")
        message_id = await invoice(bot, stars=1000)
        outcome = await control(http, sandbox, "pay", {"user_id": USER, "message_id": message_id})
        assert outcome["status"] == "paid" and outcome["delivery"]["status"] == 200
        assert [next(k for k in u if k != "update_id") for u in received] == ["pre_checkout_query", "message"]
        paid = received[1]["message"]["successful_payment"]
        assert (
            paid["total_amount"] == 1000
            and paid["telegram_payment_charge_id"] == outcome["telegram_payment_charge_id"]
        )
    finally:
        await runner.cleanup()
