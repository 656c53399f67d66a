"""The webhook's Update check accepts exactly what aiogram's ``Update.model_validate`` accepts.

The check (``serve.webhook._aiogram_validator``) is aiogram's own schema with the Python
hooks and the object construction taken out (``structural_schema``). It is compared with
aiogram on every recorded update and on thousands of mutations of them: wrong types,
missing and extra fields, nulls, at every depth.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiogram.types import Update

from serve.webhook import WebhookRejected, _aiogram_validator, parse_update

Path_ = tuple[str | int, ...]
WRONG: list[Any] = ["text", 12345, -1, 1.5, True, None, {}, [], {"id": "x"}, [1, "a"], "2024-01-01"]


def updates(fixtures: Path) -> list[tuple[str, dict[str, Any]]]:
    files = sorted((fixtures / "telegram" / "updates").glob("*.json"))
    assert len(files) >= 20
    return [(f.name, json.loads(f.read_text())) for f in files]


def paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from paths(v, (*prefix, i))


def mutate(update: dict[str, Any], path: Path_, value: Any, *, delete: bool = False) -> dict[str, Any]:
    out = copy.deepcopy(update)
    parent: Any = out
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


def aiogram_accepts(data: dict[str, Any]) -> bool:
    try:
        Update.model_validate(data)
    except Exception:
        return False
    return True


def ours_accepts(data: dict[str, Any]) -> bool:
    try:
        _aiogram_validator()(data)
    except Exception:
        return False
    return True


def test_every_recorded_update_is_accepted(shared_fixtures: Path) -> None:
    for name, update in updates(shared_fixtures):
        assert ours_accepts(update) and aiogram_accepts(update), name
        assert parse_update(json.dumps(update).encode()) == update


def test_mutations_are_judged_as_aiogram_judges_them(shared_fixtures: Path) -> None:
    rng = random.Random(20261125)
    judged = rejected = 0
    for name, update in updates(shared_fixtures):
        every = list(paths(update))
        for path in every:
            cases = [mutate(update, path, None, delete=True)]
            cases += [mutate(update, path, value) for value in rng.sample(WRONG, 4)]
            for case in cases:
                expected = aiogram_accepts(case)
                assert ours_accepts(case) == expected, (name, path, case)
                judged += 1
                rejected += not expected
        extra = mutate(update, ("message_unknown_field",), {"x": 1})  # unknown fields are allowed
        assert ours_accepts(extra) and aiogram_accepts(extra)
    assert judged > 2000 and 0.2 < rejected / judged < 0.9  # both kinds of answer were exercised


@pytest.mark.parametrize(
    "body",
    [
        {"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": 1}}},  # chat without type
        {"update_id": 1, "message": {"message_id": "one", "date": 0, "chat": {"id": 1, "type": "private"}}},
        {"update_id": 1, "callback_query": {"id": "q", "from": {"id": 1}, "chat_instance": "c"}},  # no is_bot
        {"update_id": 1, "my_chat_member": {"chat": {"id": 1, "type": "private"}}},
    ],
)
def test_not_an_update_is_a_400(body: dict[str, Any]) -> None:
    assert not aiogram_accepts(body)
    with pytest.raises(WebhookRejected) as info:
        parse_update(json.dumps(body).encode())
    assert info.value.status == 400 and info.value.error == "not a Telegram Update"


def test_json_the_fast_parser_refuses_is_read_as_before(shared_fixtures: Path) -> None:
    """orjson refuses a lone surrogate escape, which ``json`` (and Telegram's clients) accept:
    such an update is still read, the same as before."""
    name, update = updates(shared_fixtures)[0]
    body = json.dumps(update).encode()
    assert b'"update_id"' in body
    odd = json.dumps({**update, "edited_message_note": "half \ud83d a pair"}).encode()
    assert b"\\ud83d" in odd
    assert parse_update(odd) == json.loads(odd), name
    with pytest.raises(WebhookRejected) as info:
        parse_update(b'{"update_id": 1, ')
    assert info.value.status == 400 and info.value.error == "body is not JSON"
