"""``/settings`` (private and group members' own preferences) and every preference button.

``SetPref`` presses come from ``/settings`` and from the onboarding screens (``onb=1``).
Values are validated here: an unknown exchange, kind, zone or choice is "not available",
and a kind above the user's tier is refused. Changes are read-modify-write under WATCH
(``RedisUserStore.modify_preferences``) on the presser's own record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal

from aiogram import Bot, F
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message

from bot import keyboards
from bot.callbacks import SetPref
from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.routers.common import RouterSpec, answer, refuse_foreign, send, show
from bot.routers.start import onboarding_screen
from core.accounts import Preferences, TierPolicy, User
from core.missed import cadence_of
from core.models import OpportunityKind
from core.regions import parse_region
from core.timezones import resolve_zone, suggest_zones
from notify import texts
from notify.i18n import normalise_language, pick_locale, use_locale

router = RouterSpec("settings")

_MENU_OF = {
    "kind": "kinds",
    "exch": "exch",
    "sym": "sym",
    "minp": "minp",
    "mapr": "minp",
    "mconf": "minp",
    "tz": "tz",
    "hours": "hours",
    "lang": "lang",
}


class Refused(Exception):
    """A preference value that is not available (message for the callback answer)."""


def change_for(
    field: str, value: str, policy: TierPolicy, exchanges: list[str], symbols: Sequence[str] = ()
) -> Callable[[Preferences], Preferences]:
    """The validated change of one button press, as a function of the current preferences."""

    def apply(fn: Callable[[Preferences], None]) -> Callable[[Preferences], Preferences]:
        def run(prefs: Preferences) -> Preferences:
            fn(prefs)
            return prefs

        return run

    if field in ("push", "mine"):
        if value not in ("0", "1"):
            raise Refused(texts.NOT_AVAILABLE)
        name = "pushes_on" if field == "push" else "only_my_exchanges"
        return apply(lambda p: setattr(p, name, value == "1"))
    if field == "outside":
        if value not in ("hold", "silent"):
            raise Refused(texts.NOT_AVAILABLE)
        return apply(lambda p: setattr(p, "outside_hours", value))
    if field == "kind":
        try:
            kind = OpportunityKind(value)
        except ValueError:
            raise Refused(texts.NOT_AVAILABLE) from None
        if not policy.allows_kind(kind):
            raise Refused(texts.kind_locked(kind))
        return apply(lambda p: setattr(p, "kinds", p.kinds ^ {kind}))
    if field == "exch":
        if value == "*":
            return apply(lambda p: setattr(p, "exchanges", set()))
        if value not in exchanges:
            raise Refused(texts.NOT_AVAILABLE)
        return apply(lambda p: setattr(p, "exchanges", p.exchanges ^ {value}))
    if field == "sym":  # the symbol picker: toggles one, "*" clears (all symbols)
        if value == "*":
            return apply(lambda p: setattr(p, "symbols", set()))
        symbol = keyboards.symbol_of(value)
        if symbol not in symbols:
            raise Refused(texts.NOT_AVAILABLE)
        return apply(lambda p: setattr(p, "symbols", p.symbols ^ {symbol}))
    if field == "minp":  # spot: net bps
        if not value.isdigit() or int(value) not in texts.MIN_PROFIT_CHOICES:
            raise Refused(texts.NOT_AVAILABLE)
        return apply(lambda p: setattr(p, "min_net_bps", Decimal(int(value))))
    if field == "mapr":  # funding: net APR %
        if not value.isdigit() or int(value) not in texts.MIN_APR_CHOICES:
            raise Refused(texts.NOT_AVAILABLE)
        return apply(lambda p: setattr(p, "min_net_apr_pct", Decimal(int(value))))
    if field == "mconf":  # technical: confidence
        if value not in texts.MIN_CONFIDENCE_CHOICES:
            raise Refused(texts.NOT_AVAILABLE)
        return apply(lambda p: setattr(p, "min_confidence", Decimal(value)))
    if field == "tz":
        if not value.isdigit() or int(value) >= len(texts.TIMEZONES):
            raise Refused(texts.NOT_AVAILABLE)
        return apply(lambda p: setattr(p, "timezone", texts.TIMEZONES[int(value)]))
    if field == "hours":
        if value not in texts.HOURS_CHOICES:
            raise Refused(texts.NOT_AVAILABLE)
        return apply(lambda p: setattr(p, "active_hours", texts.HOURS_CHOICES[value]))
    if field == "lang":  # a language, or "auto" (the Telegram app's)
        valid, language = parse_language(value)
        if not valid:
            raise Refused(texts.NOT_AVAILABLE)
        return apply(lambda p: setattr(p, "language", language))
    raise Refused(texts.NOT_AVAILABLE)


@router.message(Command("settings"), F.chat.type == "private")
async def cmd_settings(
    message: Message,
    command: CommandObject,
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    audit: AuditNote,
) -> None:
    sub, _, rest = (command.args or "").strip().partition(" ")
    if sub.lower() in ("tz", "timezone"):  # /settings tz Europe/Paris: any IANA zone, typed
        await _set_timezone(message, bot, deps, user, rest, audit)
        return
    if sub.lower() == "region":  # /settings region DE (or none)
        await _set_region(message, bot, deps, user, rest, audit)
        return
    if sub.lower() in ("block", "unblock"):  # /settings block DOGE/USDT | bybit
        await _set_blocked(message, bot, deps, user, rest, audit, block=sub.lower() == "block")
        return
    if sub.lower() == "minsize":  # /settings minsize 5000 (USD; 0: any size)
        await _set_min_size(message, bot, deps, user, rest, audit)
        return
    if sub.lower() in ("language", "lang"):  # /settings language ru | en | auto
        await _set_language(message, bot, deps, user, rest, audit)
        return
    if sub.lower() == "digest":  # /settings digest 9 | off: the "missed while delayed" digest
        await _set_digest(message, bot, deps, user, policy, rest, audit)
        return
    if sub:
        audit.ok, audit.detail = False, "bad_args"
    await send(
        bot,
        message.chat.id,
        texts.settings_text(user.preferences, policy),
        keyboards.settings_main(user.id, user.preferences),
    )


async def _set_timezone(
    message: Message, bot: Bot, deps: BotDeps, user: User, typed: str, audit: AuditNote
) -> None:
    zone = resolve_zone(typed)
    audit.detail = f"tz={zone or typed}"[:80]
    if zone is None:
        audit.ok = False
        await send(bot, message.chat.id, texts.unknown_timezone(typed, suggest_zones(typed)))
        return
    prefs = await _save(message, bot, deps, user, audit, timezone=zone)
    if prefs is None:
        return
    await send(bot, message.chat.id, texts.timezone_set(zone, deps.now()))


async def _set_region(
    message: Message, bot: Bot, deps: BotDeps, user: User, typed: str, audit: AuditNote
) -> None:
    typed = typed.strip()
    if user.region_by_admin:
        audit.ok, audit.detail = False, "region_by_admin"
        await send(bot, message.chat.id, texts.region_locked(user.region))
        return
    if not typed:
        audit.detail = "region?"
        await send(bot, message.chat.id, texts.region_shown(user.region))
        return
    region = None if typed.lower() in ("none", "unset", "-") else parse_region(typed)
    if region is None and typed.lower() not in ("none", "unset", "-"):
        audit.ok, audit.detail = False, "bad_region"
        await send(bot, message.chat.id, texts.bad_region(typed))
        return
    audit.detail = f"region={region or 'none'}"
    if not await deps.users.update_fields(user.id, region=region):
        audit.ok = False
        await send(bot, message.chat.id, texts.NOT_AVAILABLE)
        return
    await send(bot, message.chat.id, texts.region_set(region))


async def _set_blocked(
    message: Message, bot: Bot, deps: BotDeps, user: User, typed: str, audit: AuditNote, *, block: bool
) -> None:
    """An exchange (one of the configured ones) or a symbol (any unified symbol) on or off the
    user's blacklist."""
    name = typed.strip()
    field = "blocked_exchanges" if name.lower() in deps.exchanges else "blocked_symbols"
    value = name.lower() if field == "blocked_exchanges" else name.upper()
    plausible = field == "blocked_exchanges" or ("/" in value and len(value) <= 40 and " " not in value)
    audit.detail = f"{'block' if block else 'unblock'} {value}"[:80]
    if not plausible:
        audit.ok = False
        await send(bot, message.chat.id, texts.blocked_usage(deps.exchanges))
        return

    def change(p: Preferences) -> Preferences:
        current = set(getattr(p, field))
        setattr(p, field, current | {value} if block else current - {value})
        return p

    prefs = await _save(message, bot, deps, user, audit, change=change)
    if prefs is None:
        return
    await send(bot, message.chat.id, texts.blocked_now(prefs))


async def _set_min_size(
    message: Message, bot: Bot, deps: BotDeps, user: User, typed: str, audit: AuditNote
) -> None:
    text = typed.strip().replace(",", "").replace("_", "").lstrip("$")
    try:
        size = Decimal(text)
    except ArithmeticError:
        size = Decimal(-1)
    if not text or not size.is_finite() or not Decimal(0) <= size <= Decimal(10) ** 9:
        audit.ok, audit.detail = False, "bad_min_size"
        await send(bot, message.chat.id, texts.MIN_SIZE_USAGE)
        return
    audit.detail = f"minsize={size}"
    prefs = await _save(message, bot, deps, user, audit, min_size_usd=size)
    if prefs is None:
        return
    await send(bot, message.chat.id, texts.min_size_set(prefs.min_size_usd))


AUTO_LANGUAGE = ("auto", "none", "telegram", "-")
"""What ``/settings language`` takes for "no setting: my Telegram app's language"."""


def parse_language(typed: str) -> tuple[bool, str | None]:
    """(valid, the setting) of a typed language: a supported code, or auto (None)."""
    typed = typed.strip().lower()
    if typed in AUTO_LANGUAGE:
        return True, None
    language = normalise_language(typed)
    return language is not None, language


async def _set_language(
    message: Message, bot: Bot, deps: BotDeps, user: User, typed: str, audit: AuditNote
) -> None:
    if not typed.strip():
        audit.detail = "language?"
        await send(
            bot,
            message.chat.id,
            texts.SETTINGS_MENUS["lang"],
            keyboards.settings_menu("lang", user.id, user.preferences, deps.policy_for(user), deps.exchanges),
        )
        return
    valid, language = parse_language(typed)
    audit.detail = f"language={language or 'auto'}" if valid else f"language? {typed.strip()[:16]}"
    if not valid:
        audit.ok = False
        await send(bot, message.chat.id, texts.bad_language(typed.strip()))
        return
    prefs = await _save(message, bot, deps, user, audit, language=language)
    if prefs is None:
        return
    with use_locale(pick_locale(language, message.from_user.language_code if message.from_user else None)):
        await send(bot, message.chat.id, texts.language_set(language))


async def _set_digest(
    message: Message, bot: Bot, deps: BotDeps, user: User, policy: TierPolicy, typed: str, audit: AuditNote
) -> None:
    """``/settings digest``: show it; ``<hour 0-23>``: daily at that local hour; ``off``: none."""
    text = typed.strip().lower()
    tz = user.preferences.timezone
    if not text:
        audit.detail = "digest?"
        await send(
            bot,
            message.chat.id,
            texts.digest_setting(user.preferences.digest_hour, tz, cadence=cadence_of(policy)),
        )
        return
    if text in ("off", "none", "-"):
        hour: int | None = None
    elif text.isdigit() and 0 <= int(text) <= 23:
        hour = int(text)
    else:
        audit.ok, audit.detail = False, "bad_digest"
        await send(bot, message.chat.id, texts.digest_usage())
        return
    audit.detail = f"digest={'off' if hour is None else hour}"
    prefs = await _save(message, bot, deps, user, audit, digest_hour=hour)
    if prefs is None:
        return
    await send(bot, message.chat.id, texts.digest_set(prefs.digest_hour, prefs.timezone))


async def _save(
    message: Message,
    bot: Bot,
    deps: BotDeps,
    user: User,
    audit: AuditNote,
    *,
    change: Callable[[Preferences], Preferences] | None = None,
    **values: object,
) -> Preferences | None:
    """Store ``values`` (or apply ``change``) on the user's preferences; when the store is
    away, say so and mark the audit row failed (None)."""
    prefs = await deps.users.modify_preferences(user.id, change or (lambda p: _with(p, **values)))
    if prefs is None:
        audit.ok = False
        await send(bot, message.chat.id, texts.NOT_AVAILABLE)
    return prefs


def _with(prefs: Preferences, **values: object) -> Preferences:
    for name, value in values.items():
        setattr(prefs, name, value)
    return prefs


@router.callback_query(SetPref.filter())
async def cb_set_pref(
    callback: CallbackQuery,
    callback_data: SetPref,
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    audit: AuditNote,
) -> None:
    if await refuse_foreign(callback, callback_data.uid, audit):
        return
    field, value = callback_data.field, callback_data.value
    audit.detail = f"{field}={value}"[:80]
    if field == "menu":
        await answer(callback)
        if value == "main":
            await show(
                bot,
                callback,
                texts.settings_text(user.preferences, policy),
                keyboards.settings_main(user.id, user.preferences),
            )
        elif value in texts.SETTINGS_MENUS:
            await show(
                bot,
                callback,
                texts.SETTINGS_MENUS[value],
                keyboards.settings_menu(
                    value,
                    user.id,
                    user.preferences,
                    policy,
                    deps.exchanges,
                    await deps.symbol_choices(user.preferences) if value == "sym" else (),
                ),
            )
        else:
            audit.ok = False
        return
    try:
        symbols = await deps.symbol_choices(user.preferences) if field == "sym" else []
        fn = change_for(field, value, policy, deps.exchanges, symbols)
    except Refused as exc:
        audit.ok = False
        await answer(callback, str(exc))
        return
    prefs = await deps.users.modify_preferences(user.id, fn)
    if prefs is None:
        audit.ok = False
        await answer(callback, texts.NOT_AVAILABLE)
        return
    user.preferences = prefs
    if field == "lang":  # the rest of this answer already in the new language
        with use_locale(pick_locale(prefs.language, callback.from_user.language_code)):
            await _after_change(callback, callback_data, bot, deps, user, policy, prefs)
        return
    await _after_change(callback, callback_data, bot, deps, user, policy, prefs)


async def _after_change(
    callback: CallbackQuery,
    callback_data: SetPref,
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    prefs: Preferences,
) -> None:
    field = callback_data.field
    await answer(callback, texts.SAVED)
    menu = _MENU_OF.get(field)
    if callback_data.onb and menu is not None:
        text, markup = onboarding_screen(menu, user, policy, deps)
        await show(bot, callback, text, markup)
    elif menu is not None:
        await show(
            bot,
            callback,
            texts.SETTINGS_MENUS[menu],
            keyboards.settings_menu(
                menu,
                user.id,
                prefs,
                policy,
                deps.exchanges,
                await deps.symbol_choices(prefs) if menu == "sym" else (),
            ),
        )
    else:
        await show(bot, callback, texts.settings_text(prefs, policy), keyboards.settings_main(user.id, prefs))
