"""The aiogram client factory: the answer models of the hot methods outlive garbage collection."""

from __future__ import annotations

import gc

from aiogram.methods import EditMessageText, SendMessage
from aiogram.methods.base import Response

from notify.client import HOT_RESPONSE_TYPES


def test_the_answer_model_of_a_push_is_built_once_not_after_every_collection() -> None:
    # aiogram parametrizes Response per call; pydantic caches the model only while referenced
    gc.collect()
    assert Response[SendMessage.__returning__] is HOT_RESPONSE_TYPES[0]  # type: ignore[name-defined]
    assert Response[EditMessageText.__returning__] is HOT_RESPONSE_TYPES[1]  # type: ignore[name-defined]
