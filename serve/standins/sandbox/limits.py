"""What the sandbox refuses, and with which words: Telegram's error bodies, text limits, HTML parsing.

The bodies are the ones recorded from the real Bot API (shared/fixtures/telegram/errors).
"""

from __future__ import annotations

import re
from typing import Any

MAX_TEXT_LENGTH = 4096
"""Characters (code points) after entity parsing, as Telegram counts them."""

UNAUTHORIZED: dict[str, Any] = {"ok": False, "error_code": 401, "description": "Unauthorized"}
NOT_FOUND: dict[str, Any] = {"ok": False, "error_code": 404, "description": "Not Found"}
BLOCKED: dict[str, Any] = {
    "ok": False,
    "error_code": 403,
    "description": "Forbidden: bot was blocked by the user",
}
DEACTIVATED: dict[str, Any] = {
    "ok": False,
    "error_code": 403,
    "description": "Forbidden: user is deactivated",
}
TOO_LONG = "Bad Request: message is too long"
TEXT_EMPTY = "Bad Request: message text is empty"
CHAT_NOT_FOUND = "Bad Request: chat not found"
EDIT_NOT_FOUND = "Bad Request: message to edit not found"
DELETE_NOT_FOUND = "Bad Request: message to delete not found"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
USER_NOT_FOUND = "Bad Request: user not found"
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)


class ApiError(Exception):
    """An error answer: HTTP status = `error_code`, body `{"ok":false,...}`."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ApiError:
        return cls(int(body["error_code"]), str(body["description"]), body.get("parameters"))

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters is not None:
            out["parameters"] = self.parameters
        return out


def bad_request(description: str) -> ApiError:
    if not description.startswith("Bad Request"):
        description = f"Bad Request: {description}"
    return ApiError(400, description)


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})


# --- HTML parse mode ---------------------------------------------------------------------------------

_SIMPLE_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
}
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^>]*)?)\s*/?>")
_ATTR = re.compile(r"""([a-zA-Z-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))|([a-zA-Z-]+)""")
_ENTITY = re.compile(r"&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _unescape(fragment: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.startswith("#x"):
            return chr(int(name[2:], 16))
        if name.startswith("#"):
            return chr(int(name[1:]))
        return _NAMED.get(name, m.group(0))

    return _ENTITY.sub(repl, fragment) if "&" in fragment else fragment


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def parse_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML parse mode, loosely: plain text and message entities (UTF-16 offsets).

    Raises `ApiError` 400 "can't parse entities: …" for unsupported or unbalanced tags.
    """
    if "<" not in source:
        return _unescape(source), []
    out: list[str] = []
    out_len = 0  # UTF-16 units
    stack: list[tuple[str, int, dict[str, Any]]] = []
    entities: list[dict[str, Any]] = []
    pos = 0
    while True:
        lt = source.find("<", pos)
        chunk = _unescape(source[pos : lt if lt >= 0 else len(source)])
        out.append(chunk)
        out_len += _utf16_len(chunk)
        if lt < 0:
            break
        m = _TAG.match(source, lt)
        if m is None:
            gt = source.find(">", lt)
            offset = _byte_offset(source, lt)
            if gt < 0:
                raise bad_request(f"can't parse entities: Unclosed start tag at byte offset {offset}")
            name = source[lt + 1 : gt].split()[0] if source[lt + 1 : gt].split() else ""
            raise bad_request(
                f'can\'t parse entities: Unsupported start tag "{name}" at byte offset {offset}'
            )
        closing, name, attrs = m.group(1) == "/", m.group(2).lower(), m.group(3)
        if closing:
            if not stack:
                raise bad_request(
                    f"can't parse entities: Unexpected end tag at byte offset {_byte_offset(source, lt)}"
                )
            open_name, start, entity = stack.pop()
            if open_name != name:
                raise bad_request(
                    f"can't parse entities: Unmatched end tag at byte offset {_byte_offset(source, lt)}, "
                    f'expected "</{open_name}>", found "</{name}>"'
                )
            length = out_len - start
            if length > 0 and entity:
                entity["offset"], entity["length"] = start, length
                entities.append(entity)
        else:
            stack.append((name, out_len, _entity_for(name, attrs, source, lt)))
        pos = m.end()
    if stack:
        raise bad_request(
            f"can't parse entities: Can't find end tag corresponding to start tag \"{stack[-1][0]}\""
        )
    text = "".join(out)
    _merge_pre_code(entities)
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return text, entities


def _entity_for(name: str, attrs: str, source: str, at: int) -> dict[str, Any]:
    values: dict[str, str] = {}
    for m in _ATTR.finditer(attrs or ""):
        if m.group(1):
            values[m.group(1).lower()] = _unescape(next(g for g in m.group(2, 3, 4) if g is not None))
        elif m.group(5):
            values[m.group(5).lower()] = ""
    if name in _SIMPLE_TAGS:
        kind = _SIMPLE_TAGS[name]
        if kind == "blockquote" and "expandable" in values:
            kind = "expandable_blockquote"
        entity: dict[str, Any] = {"type": kind}
        if name == "code" and values.get("class", "").startswith("language-"):
            entity["language"] = values["class"][len("language-") :]
        return entity
    if name == "span" and values.get("class") == "tg-spoiler":
        return {"type": "spoiler"}
    if name == "a":
        url = values.get("href", "")
        if not url:
            return {}
        return {"type": "text_link", "url": url}
    if name == "tg-emoji":
        return {"type": "custom_emoji", "custom_emoji_id": values.get("emoji-id", "0")}
    raise bad_request(
        f'can\'t parse entities: Unsupported start tag "{name}" at byte offset {_byte_offset(source, at)}'
    )


def _merge_pre_code(entities: list[dict[str, Any]]) -> None:
    """`<pre><code class="language-x">` is one `pre` entity with a language, as Telegram makes it."""
    pres = {(e["offset"], e["length"]): e for e in entities if e["type"] == "pre"}
    for entity in list(entities):
        if entity["type"] == "code" and (entity["offset"], entity["length"]) in pres:
            if "language" in entity:
                pres[(entity["offset"], entity["length"])]["language"] = entity["language"]
            entities.remove(entity)
    for entity in entities:
        if entity["type"] == "code":
            entity.pop("language", None)


def render_text(text: str, parse_mode: str | None) -> tuple[str, list[dict[str, Any]]]:
    """The text as sent, the plain text and entities Telegram would store, or a 400."""
    if parse_mode and parse_mode.upper() == "HTML":
        plain, entities = parse_html(text)
    else:
        # Markdown modes are accepted but not parsed (the bot speaks HTML): stored as is.
        plain, entities = text, []
    if not plain.strip():
        raise bad_request(TEXT_EMPTY)
    if len(plain) > MAX_TEXT_LENGTH:
        raise bad_request(TOO_LONG)
    return plain, entities


_COMMAND = re.compile(r"(?<![\w/])/[a-zA-Z0-9_]{1,32}(?:@[a-zA-Z0-9_]{3,32})?")


def command_entities(text: str) -> list[dict[str, Any]]:
    """`bot_command` entities as Telegram adds them to users' messages (`/cmd`, `/cmd@bot`)."""
    entities = []
    for m in _COMMAND.finditer(text):
        offset = _utf16_len(text[: m.start()])
        entities.append({"offset": offset, "length": _utf16_len(m.group(0)), "type": "bot_command"})
    return entities
