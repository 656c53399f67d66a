"""Payments in Telegram Stars for the sandbox: ``sendInvoice``, ``answerPreCheckoutQuery``,
``refundStarPayment``, and a user paying an invoice (``POST /sandbox/pay``, the chat page's
"Pay" button).

As the Bot API documents them (Stars only, currency ``XTR``; the sandbox has no payment
providers):

- ``sendInvoice``: ``chat_id``, ``title`` (1-32 characters), ``description`` (1-255),
  ``payload`` (1-128 bytes), ``currency`` (``XTR``), ``prices`` (a JSON array of exactly
  one ``LabeledPrice`` ``{label, amount}``, amount a positive whole number of Stars);
  ``provider_token`` empty or absent. Returns the ``Message`` with an ``invoice``
  (``title, description, start_parameter, currency, total_amount``).
- Paying: the sandbox posts a ``pre_checkout_query`` update (``id, from, currency,
  total_amount, invoice_payload``) and waits up to ``CHECKOUT_TIMEOUT_S`` (Telegram's 10 s)
  for ``answerPreCheckoutQuery``; on ``ok: true`` the user's ``successful_payment`` service
  message (``currency, total_amount, invoice_payload, telegram_payment_charge_id,
  provider_payment_charge_id``) is posted as a ``message`` update.
- ``answerPreCheckoutQuery``: ``pre_checkout_query_id``, ``ok``, and ``error_message``
  when ``ok`` is false. Unknown, answered or timed-out ids: ``QUERY_ID_INVALID``.
- ``refundStarPayment``: ``user_id`` and ``telegram_payment_charge_id`` of a payment by
  that user; ``CHARGE_ALREADY_REFUNDED`` the second time, ``CHARGE_ID_INVALID`` for an
  unknown charge. A refund posts the user's ``refunded_payment`` service message.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from serve.standins.sandbox.limits import ApiError, bad_request

if TYPE_CHECKING:
    from serve.standins.sandbox.server import TelegramSandbox
    from serve.standins.sandbox.state import BotState

CURRENCY = "XTR"
CHECKOUT_TIMEOUT_S = 10.0
"""Telegram cancels a checkout the bot does not answer within 10 seconds."""

QUERY_ID_INVALID = "Bad Request: QUERY_ID_INVALID"
CHARGE_ALREADY_REFUNDED = "Bad Request: CHARGE_ALREADY_REFUNDED"
CHARGE_ID_INVALID = "Bad Request: CHARGE_ID_INVALID"
PAYMENT_PROVIDER_INVALID = "Bad Request: PAYMENT_PROVIDER_INVALID"
CURRENCY_TOTAL_AMOUNT_INVALID = "Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID"


def _required(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise bad_request(f'parameter "{name}" is required')
    return value


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, int):
        return bool(value)
    return None


def _prices(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise bad_request("can't parse prices JSON object") from exc
    if not isinstance(raw, list) or not raw:
        raise bad_request('field "prices" must be a non-empty Array of LabeledPrice')
    for item in raw:
        if not isinstance(item, dict) or not item.get("label"):
            raise bad_request('can\'t find field "label"')
        if "amount" not in item:
            raise bad_request('can\'t find field "amount"')
    return raw


@dataclass
class Invoice:
    chat_id: int
    message_id: int
    title: str
    description: str
    payload: str
    currency: str
    total_amount: int


@dataclass
class Checkout:
    id: str
    user_id: int
    invoice: Invoice
    answered: asyncio.Future[dict[str, Any]]


@dataclass
class Charge:
    telegram_payment_charge_id: str
    provider_payment_charge_id: str
    user_id: int
    chat_id: int
    invoice: Invoice
    refunded: bool = False


@dataclass
class BotPayments:
    invoices: dict[tuple[int, int], Invoice] = field(default_factory=dict)
    checkouts: dict[str, Checkout] = field(default_factory=dict)
    charges: dict[str, Charge] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)


class SandboxPayments:
    """The sandbox's payments: state per bot, the three Bot API methods, and paying."""

    def __init__(self, sandbox: TelegramSandbox, *, checkout_timeout_s: float = CHECKOUT_TIMEOUT_S) -> None:
        self.sandbox = sandbox
        self.checkout_timeout_s = checkout_timeout_s
        self._by_bot: dict[str, BotPayments] = {}

    def of(self, bot: BotState) -> BotPayments:
        return self._by_bot.setdefault(bot.token, BotPayments())

    def reset(self) -> None:
        self._by_bot.clear()

    # -- Bot API ---------------------------------------------------------------------------------

    async def send_invoice(self, bot: BotState, params: dict[str, Any]) -> dict[str, Any]:
        sb = self.sandbox
        chat = sb.chat(params.get("chat_id"))
        title = str(_required(params, "title"))
        description = str(_required(params, "description"))
        payload = str(_required(params, "payload"))
        currency = str(_required(params, "currency"))
        prices = _prices(_required(params, "prices"))
        if not 1 <= len(title) <= 32:
            raise bad_request("INVOICE_TITLE_INVALID")
        if not 1 <= len(description) <= 255:
            raise bad_request("INVOICE_DESCRIPTION_INVALID")
        if not 1 <= len(payload.encode()) <= 128:
            raise bad_request("INVOICE_PAYLOAD_INVALID")
        if currency != CURRENCY or params.get("provider_token"):
            # Stars need an empty provider_token; any other currency needs a provider
            raise bad_request(PAYMENT_PROVIDER_INVALID)
        if len(prices) != 1:
            raise bad_request("STARS_INVOICE_INVALID")
        amount = prices[0]["amount"]
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise bad_request(CURRENCY_TOTAL_AMOUNT_INVALID)
        sb._check_reachable(bot, chat)
        sb._flood(bot, chat)
        log = bot.log(chat.id)
        message_id = log.next_id
        log.next_id += 1
        start_parameter = str(params.get("start_parameter") or "")
        msg: dict[str, Any] = {
            "message_id": message_id,
            "from": bot.user.to_api(),
            "chat": chat.to_api(),
            "date": int(time.time()),
            "invoice": {
                "title": title,
                "description": description,
                "start_parameter": start_parameter,
                "currency": currency,
                "total_amount": amount,
            },
        }
        markup = sb._inline_markup(params)
        if markup is not None:
            msg["reply_markup"] = markup
        from serve.standins.sandbox.state import _Entry

        log.entries[message_id] = _Entry(msg, True, bool(params.get("disable_notification")))
        self.of(bot).invoices[(chat.id, message_id)] = Invoice(
            chat.id, message_id, title, description, payload, currency, amount
        )
        return msg

    async def answer_pre_checkout_query(self, bot: BotState, params: dict[str, Any]) -> bool:
        query_id = str(_required(params, "pre_checkout_query_id"))
        if "ok" not in params:
            raise bad_request('parameter "ok" is required')
        ok = _bool(params["ok"])
        if ok is None:
            raise bad_request('field "ok" must be of type Boolean')
        error = str(params.get("error_message") or "")
        if not ok and not error:
            raise bad_request("ERROR_MESSAGE_EMPTY")
        checkout = self.of(bot).checkouts.get(query_id)
        if checkout is None or checkout.answered.done():
            raise bad_request(QUERY_ID_INVALID)
        checkout.answered.set_result({"ok": ok, "error_message": error or None})
        return True

    async def refund_star_payment(self, bot: BotState, params: dict[str, Any]) -> bool:
        raw_user = _required(params, "user_id")
        try:
            user_id = int(raw_user)
        except (TypeError, ValueError):
            raise bad_request("invalid user_id specified") from None
        charge_id = str(_required(params, "telegram_payment_charge_id"))
        charge = self.of(bot).charges.get(charge_id)
        if charge is None:
            raise bad_request(CHARGE_ID_INVALID)
        if charge.user_id != user_id:
            raise bad_request("USER_ID_INVALID")
        if charge.refunded:
            raise bad_request(CHARGE_ALREADY_REFUNDED)
        charge.refunded = True
        self.of(bot).log.append({"event": "refunded", "telegram_payment_charge_id": charge_id})
        refunded = {
            "currency": charge.invoice.currency,
            "total_amount": charge.invoice.total_amount,
            "invoice_payload": charge.invoice.payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": charge.provider_payment_charge_id,
        }
        self.sandbox.emit(
            bot,
            {
                "message": self._service_message(
                    bot, charge.user_id, charge.chat_id, refunded_payment=refunded
                )
            },
        )
        return True

    # -- a user paying ---------------------------------------------------------------------------

    def _service_message(self, bot: BotState, user_id: int, chat_id: int, **content: Any) -> dict[str, Any]:
        from serve.standins.sandbox.state import _Entry

        sb = self.sandbox
        user = sb.user(user_id)
        chat = sb.chat(chat_id)
        log = bot.log(chat.id)
        message_id = log.next_id
        log.next_id += 1
        msg = {
            "message_id": message_id,
            "from": user.to_api(),
            "chat": chat.to_api(),
            "date": int(time.time()),
            **content,
        }
        log.entries[message_id] = _Entry(msg, False)
        return msg

    async def pay(
        self, bot: BotState, user_id: int, message_id: int, chat_id: int | None = None
    ) -> dict[str, Any]:
        """``user_id`` pays the invoice ``message_id``: pre-checkout, then (if the bot says ok)
        the successful payment. Returns what happened (``status``: ``paid`` | ``declined`` |
        ``timeout``)."""
        sb = self.sandbox
        user = sb.user(user_id)
        chat_id = user.id if chat_id is None else chat_id
        state = self.of(bot)
        invoice = state.invoices.get((chat_id, message_id))
        if invoice is None:
            raise ApiError(400, f"no invoice {message_id} from the bot in chat {chat_id}")
        query_id = str(secrets.randbits(63))
        answered: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        outcome: dict[str, Any]
        state.checkouts[query_id] = Checkout(query_id, user.id, invoice, answered)
        query = {
            "id": query_id,
            "from": user.to_api(),
            "currency": invoice.currency,
            "total_amount": invoice.total_amount,
            "invoice_payload": invoice.payload,
        }
        sb.emit(bot, {"pre_checkout_query": query})
        try:
            answer = await asyncio.wait_for(asyncio.shield(answered), self.checkout_timeout_s)
        except TimeoutError:
            answered.cancel()  # a late answer gets QUERY_ID_INVALID, as at Telegram
            outcome = {"status": "timeout", "pre_checkout_query_id": query_id}
            state.log.append(outcome)
            return outcome
        if not answer["ok"]:
            outcome = {
                "status": "declined",
                "pre_checkout_query_id": query_id,
                "error_message": answer["error_message"],
            }
            state.log.append(outcome)
            return outcome
        charge = Charge(
            f"stxsb{secrets.token_hex(12)}",
            f"sbprov{secrets.token_hex(6)}",
            user.id,
            chat_id,
            invoice,
        )
        state.charges[charge.telegram_payment_charge_id] = charge
        paid = {
            "currency": invoice.currency,
            "total_amount": invoice.total_amount,
            "invoice_payload": invoice.payload,
            "telegram_payment_charge_id": charge.telegram_payment_charge_id,
            "provider_payment_charge_id": charge.provider_payment_charge_id,
        }
        msg = self._service_message(bot, user.id, chat_id, successful_payment=paid)
        done = sb.emit(bot, {"message": msg})
        update_id = bot.next_update_id - 1
        outcome = {
            "status": "paid",
            "pre_checkout_query_id": query_id,
            "telegram_payment_charge_id": charge.telegram_payment_charge_id,
            "provider_payment_charge_id": charge.provider_payment_charge_id,
            "message": msg,
            "update_id": update_id,
        }
        state.log.append({k: v for k, v in outcome.items() if k != "message"})
        try:  # the payment is made either way; this only reports its delivery to the bot
            outcome["delivery"] = await asyncio.wait_for(asyncio.shield(done), self.checkout_timeout_s * 3)
        except TimeoutError:
            outcome["delivery"] = {"update_id": update_id, "pending": True}
        return outcome

    # -- control API -----------------------------------------------------------------------------

    async def c_pay(self, request: web.Request) -> web.Response:
        """``POST /sandbox/pay {"user_id", "message_id", "chat_id"?}``: pay an invoice."""
        from serve.standins.sandbox.state import _control_error, _json_response

        body = await self.sandbox._body(request)
        bot = self.sandbox._bot_for(request, body)
        for key in ("user_id", "message_id"):
            if key not in body:
                raise _control_error(400, f"pay needs {key} (the invoice message)")
        chat_id = int(body["chat_id"]) if body.get("chat_id") is not None else None
        try:
            outcome = await self.pay(bot, int(body["user_id"]), int(body["message_id"]), chat_id)
        except ApiError as exc:
            raise _control_error(400, exc.description) from None
        return _json_response({"ok": True, **outcome})

    async def c_payments(self, request: web.Request) -> web.Response:
        """``GET /sandbox/payments``: the charges and what each pay attempt came to."""
        from serve.standins.sandbox.state import _json_response

        state = self.of(self.sandbox._bot_for(request))
        charges = [
            {
                "telegram_payment_charge_id": c.telegram_payment_charge_id,
                "provider_payment_charge_id": c.provider_payment_charge_id,
                "user_id": c.user_id,
                "total_amount": c.invoice.total_amount,
                "currency": c.invoice.currency,
                "invoice_payload": c.invoice.payload,
                "refunded": c.refunded,
            }
            for c in state.charges.values()
        ]
        return _json_response({"ok": True, "charges": charges, "log": state.log[-1000:]})


__all__ = ["CHECKOUT_TIMEOUT_S", "CURRENCY", "SandboxPayments"]
