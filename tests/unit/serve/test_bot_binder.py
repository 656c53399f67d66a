"""Binding a chat to the bot of the pool its update came to (serve.handlers.BotBinder)."""

from __future__ import annotations

from typing import Any

from serve.handlers import BotBinder


class FakeBindings:
    def __init__(self) -> None:
        self.bound: dict[int, int] = {}
        self.writes = 0
        self.down = False

    async def bind(self, chat_id: int, bot: int) -> bool:
        if self.down:
            raise ConnectionError("redis down")
        self.writes += 1
        changed = self.bound.get(chat_id) != bot
        self.bound[chat_id] = bot
        return changed


def message(chat: int, text: str = "hi") -> dict[str, Any]:
    return {
        "update_id": 1,
        "message": {"message_id": 1, "chat": {"id": chat, "type": "private"}, "text": text},
    }


def member(chat: int, status: str) -> dict[str, Any]:
    return {"update_id": 2, "my_chat_member": {"chat": {"id": chat}, "new_chat_member": {"status": status}}}


async def test_the_bot_a_chat_last_talked_to_is_its_bot_written_only_when_it_changes() -> None:
    store = FakeBindings()
    binder = BotBinder(store)  # type: ignore[arg-type]
    await binder.note(message(5, "/start"), 11)
    await binder.note(message(5), 11)
    await binder.note(message(5), 11)
    assert store.bound == {5: 11} and store.writes == 1  # remembered: no write per update
    await binder.note(message(5), 22)  # the user talks to another bot of the pool: rebound
    assert store.bound == {5: 22} and binder.binds == 2
    await binder.note(message(5, "/start"), 22)  # a /start is written again (/forget may have erased it)
    assert store.writes == 3
    await binder.note(member(-100, "administrator"), 33)  # a group: bound to the bot added to it
    assert store.bound[-100] == 33


async def test_leaving_a_bot_binds_nothing_and_a_failed_write_is_tried_at_the_next_update() -> None:
    store = FakeBindings()
    binder = BotBinder(store)  # type: ignore[arg-type]
    await binder.note(message(7), 11)
    await binder.note(member(7, "kicked"), 22)  # blocked bot 22: its pushes stay with bot 11
    await binder.note(member(-5, "left"), 22)
    assert store.bound == {7: 11}
    store.down = True
    await binder.note(message(8), 22)  # never raises: the reply matters more
    store.down = False
    await binder.note(message(8), 22)
    assert store.bound[8] == 22
