"""The aiogram ``Bot`` client: one factory for the bot's replies and the actors' pushes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageReplyMarkup,
    EditMessageText,
    GetUpdates,
    SendMessage,
    TelegramMethod,
)
from aiogram.methods.base import Response, TelegramType
from aiogram.types import TelegramObject
from aiohttp import ClientError, ClientSession, ClientTimeout, TraceConfig, TraceRequestChunkSentParams

from core.errors import ConfigError
from core.settings import Settings
from notify.wire import on_wire, wire_callback


class SentMessage(TelegramObject):
    """What a push needs of ``sendMessage``'s answer: its ``message_id``. The rest of the
    ``Message`` is kept as it came (extra fields, not validated): reading the whole
    ``Message`` into models was a seventh of a push's client CPU."""

    message_id: int


class PushMessage(SendMessage):
    """``sendMessage`` answered with a :class:`SentMessage` (the queue shards' pushes)."""

    __returning__ = SentMessage  # type: ignore[assignment]  # a narrower answer, on purpose

    if TYPE_CHECKING:  # aiogram types ``SendMessage.__init__`` by hand; the fields are its own

        def __init__(self, **fields: Any) -> None: ...


class EditPush(EditMessageText):
    """``editMessageText`` of a push (its close), answered with a :class:`SentMessage` (or
    ``True``, Telegram's answer for an inline message) like :class:`PushMessage`."""

    __returning__ = SentMessage | bool  # a narrower answer, on purpose

    if TYPE_CHECKING:

        def __init__(self, **fields: Any) -> None: ...


_HOT_METHODS: tuple[type[TelegramMethod[Any]], ...] = (
    SendMessage,
    EditMessageText,
    EditMessageReplyMarkup,
    AnswerCallbackQuery,
    GetUpdates,
    PushMessage,
    EditPush,
)
HOT_RESPONSE_TYPES = tuple(Response[m.__returning__] for m in _HOT_METHODS)  # type: ignore[name-defined]
"""aiogram reads every answer as ``Response[<the method's type>]``, parametrized on each call, and
pydantic keeps a parametrized model only while something references it: without these
references the model of every push's answer is built again after each garbage collection
(a tenth of a queue shard's CPU at 1,000 messages/s)."""


async def _chunk_sent(
    _session: ClientSession, _ctx: SimpleNamespace, _params: TraceRequestChunkSentParams
) -> None:
    # aiohttp awaits this right before writing the chunk (nothing here suspends, so the write
    # follows at once); the body's task was created in the sender's context, so it sees its callback
    callback = wire_callback()
    if callback is not None:
        callback()


_WIRE_TRACE = TraceConfig()
_WIRE_TRACE.on_request_chunk_sent.append(_chunk_sent)
_WIRE_TRACE.freeze()

_JSON_HEADERS = {"Content-Type": "application/json"}
MARKUPS_KEPT = 4096
"""Keyboards whose prepared JSON a session keeps (a push's keyboard is one object per
opportunity and language: ``notify.keyboards.push``)."""


class WireSession(AiohttpSession):
    """aiogram's aiohttp session, telling :func:`on_wire` callers when a request is written,
    and sending a request without files as a JSON body (the Bot API takes ``application/json``
    as it takes forms): aiogram's form is urlencoded field by field with ``urllib``, a third
    of a push's client CPU. The values are aiogram's own (``prepare_value``: defaults
    resolved, ``None`` left out); a keyboard object already prepared is reused. A request
    with files goes as aiogram's multipart form."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._traced: ClientSession | None = None
        self._markups: dict[int, tuple[TelegramObject, Any]] = {}

    def json_body(self, bot: Bot, method: TelegramMethod[Any]) -> str | None:
        """The request's JSON body, or None when it carries files."""
        files: dict[str, Any] = {}
        markup = getattr(method, "reply_markup", None)
        if not isinstance(markup, TelegramObject):
            markup = None
        dumped = method.model_dump(warnings=False, exclude={"reply_markup"} if markup is not None else None)
        body = self.prepare_value(dumped, bot=bot, files=files, _dumps_json=False)
        if markup is not None:
            kept = self._markups.get(id(markup))
            if kept is None or kept[0] is not markup:
                if len(self._markups) >= MARKUPS_KEPT:
                    self._markups.clear()
                kept = (markup, self.prepare_value(markup, bot=bot, files=files, _dumps_json=False))
                self._markups[id(markup)] = kept
            body["reply_markup"] = kept[1]
        if files:
            return None
        # aiogram's form leaves out what prepares to None or ""; so does the body
        return self.json_dumps({key: value for key, value in body.items() if value != ""})

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's signature
    ) -> TelegramType:
        body = self.json_body(bot, method)
        if body is None:
            return await super().make_request(bot, method, timeout)
        session = await self.create_session()
        url = self.api.api_url(token=bot.token, method=method.__api_method__)
        try:
            async with session.post(
                url,
                data=body,
                headers=_JSON_HEADERS,
                timeout=ClientTimeout(total=self.timeout if timeout is None else timeout),
            ) as resp:
                raw = await resp.text()
        except TimeoutError as exc:
            raise TelegramNetworkError(method=method, message="Request timeout error") from exc
        except ClientError as exc:
            raise TelegramNetworkError(method=method, message=f"{type(exc).__name__}: {exc}") from exc
        response = self.check_response(bot=bot, method=method, status_code=resp.status, content=raw)
        return response.result  # type: ignore[return-value]

    async def create_session(self) -> ClientSession:
        session = await super().create_session()
        if session is not self._traced:  # a new aiohttp session (the first, or after a close)
            session.trace_configs.append(_WIRE_TRACE)
            self._traced = session
        return session


def build_bot(settings: Settings, *, session: AiohttpSession | None = None, token: str | None = None) -> Bot:
    """An aiogram ``Bot`` talking HTML to ``settings.telegram.api_base`` (Telegram or the sandbox);
    ``token``: one bot of the pool (``telegram.pool``), default the primary."""
    token = token or settings.telegram.token
    if not token:
        raise ConfigError("no bot token: set ARBFLOW_TELEGRAM__TOKEN (the sandbox prints one)")
    return Bot(
        token,
        session=session or WireSession(api=TelegramAPIServer.from_base(settings.telegram.api_base)),
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )


__all__ = [
    "HOT_RESPONSE_TYPES",
    "EditPush",
    "PushMessage",
    "SentMessage",
    "WireSession",
    "build_bot",
    "on_wire",
]
