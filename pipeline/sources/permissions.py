"""What an exchange API key may do, asked of the exchange with ccxt.

``/apikeys add`` accepts read-only keys only. Where the exchange tells a key's own
permissions, it is asked with the key itself (ccxt 4.5 implicit methods):

- binance: ``GET /sapi/v1/account/apiRestrictions`` (``sapiGetAccountApiRestrictions``):
  read-only when every ``enable…``/``permits…`` flag but ``enableReading`` and
  ``enableFixReadOnly`` is false;
- bybit: ``GET /v5/user/query-api`` (``privateGetV5UserQueryApi``): ``readOnly`` = 1 and
  no ``Withdraw`` in ``permissions.Wallet``;
- okx: ``GET /api/v5/account/config`` (``privateGetAccountConfig``): ``perm`` has neither
  ``trade`` nor ``withdraw``.

The parsers are pure (:func:`parse_permissions`): the exchange's answer in, a
:class:`KeyPermissions` out, naming each permission to turn off as the exchange's own
settings page calls it. :func:`check_key` runs the call through
:func:`~pipeline.sources.ccxt_rules.ccxt_client` (so ``ARBFLOW_MARKET__ENDPOINTS`` points
it at the exchange emulators) and never raises: its :class:`KeyCheck` says verified,
rejected (the exchange refused the key, secret or passphrase), unreachable, or
unsupported (no permission endpoint known for that exchange).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import ccxt

from core.settings import MarketSettings
from pipeline.sources.ccxt_rules import ccxt_client

log = logging.getLogger(__name__)
_QUIET = logging.getLogger(f"{__name__}.ccxt")  # ccxt logs request headers (the key) at DEBUG
_QUIET.setLevel(logging.WARNING)

CHECK_TIMEOUT_S = 15.0
"""At most this long for one check (ccxt's own timeout applies per request)."""


@dataclass(frozen=True, slots=True)
class KeyPermissions:
    """One key's permissions, by what they allow. Each tuple holds the exchange's own names
    of the permissions that are on (empty: off)."""

    exchange: str
    trade: tuple[str, ...] = ()
    withdraw: tuple[str, ...] = ()
    transfer: tuple[str, ...] = ()
    """Moving funds between the account's own wallets or sub-accounts."""

    @property
    def read_only(self) -> bool:
        return not (self.trade or self.withdraw or self.transfer)

    @property
    def to_turn_off(self) -> tuple[str, ...]:
        """Every permission that makes the key more than read-only, withdrawals first."""
        return self.withdraw + self.trade + self.transfer


class CheckStatus(StrEnum):
    VERIFIED = "verified"
    REJECTED = "rejected"
    UNREACHABLE = "unreachable"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """The outcome of :func:`check_key`: ``permissions`` when verified, else why not."""

    exchange: str
    status: CheckStatus
    permissions: KeyPermissions | None = None
    detail: str = field(default="", repr=False)
    """The error's class name (for the audit row; never the key)."""

    @property
    def read_only(self) -> bool:
        return self.permissions is not None and self.permissions.read_only


class UnexpectedAnswer(ValueError):
    """The exchange's answer does not have the shape its documentation gives."""


def _flag(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


_BINANCE_TRADE = (
    ("enableSpotAndMarginTrading", "Enable Spot & Margin Trading"),
    ("enableMargin", "Enable Margin Loan, Repay & Transfer"),
    ("enableFutures", "Enable Futures"),
    ("enableVanillaOptions", "Enable European Options"),
    ("enablePortfolioMarginTrading", "Enable Portfolio Margin Trading"),
    ("enableFixApiTrade", "Enable FIX API Trading"),
)
_BINANCE_TRANSFER = (
    ("enableInternalTransfer", "Permits Internal Transfer"),
    ("permitsUniversalTransfer", "Permits Universal Transfer"),
)


def parse_binance(data: Any) -> KeyPermissions:
    """``GET /sapi/v1/account/apiRestrictions``."""
    if not isinstance(data, Mapping) or "enableReading" not in data:
        raise UnexpectedAnswer("binance apiRestrictions: no enableReading field")
    return KeyPermissions(
        exchange="binance",
        trade=tuple(label for name, label in _BINANCE_TRADE if _flag(data, name)),
        withdraw=("Enable Withdrawals",) if _flag(data, "enableWithdrawals") else (),
        transfer=tuple(label for name, label in _BINANCE_TRANSFER if _flag(data, name)),
    )


def parse_bybit(data: Any) -> KeyPermissions:
    """``GET /v5/user/query-api`` (the whole answer or its ``result``). ``readOnly`` 0 is
    "Read-Write": every listed permission then allows acting; with ``readOnly`` 1 the lists
    are what the key may read."""
    result = data.get("result", data) if isinstance(data, Mapping) else None
    if not isinstance(result, Mapping) or "readOnly" not in result:
        raise UnexpectedAnswer("bybit query-api: no readOnly field")
    perms = result.get("permissions") or {}
    if not isinstance(perms, Mapping):
        raise UnexpectedAnswer("bybit query-api: permissions is not an object")
    wallet = [str(p) for p in perms.get("Wallet") or []]
    withdraw = ("Wallet: Withdraw",) if "Withdraw" in wallet else ()
    if str(result.get("readOnly")).strip() == "1":
        return KeyPermissions(exchange="bybit", withdraw=withdraw)
    trade = tuple(
        f"{group}: {p}" for group, items in perms.items() if group != "Wallet" for p in (items or [])
    )
    transfer = tuple(f"Wallet: {p}" for p in wallet if p != "Withdraw")
    if not (trade or withdraw or transfer):
        trade = ("Read-Write",)
    return KeyPermissions(exchange="bybit", trade=trade, withdraw=withdraw, transfer=transfer)


def parse_okx(data: Any) -> KeyPermissions:
    """``GET /api/v5/account/config`` (the whole answer or its first ``data`` row)."""
    row = data
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        row = data["data"][0] if data["data"] else None
    if not isinstance(row, Mapping) or "perm" not in row:
        raise UnexpectedAnswer("okx account/config: no perm field")
    perm = {p.strip() for p in str(row["perm"]).split(",") if p.strip()}
    return KeyPermissions(
        exchange="okx",
        trade=("Trade",) if "trade" in perm else (),
        withdraw=("Withdraw",) if "withdraw" in perm else (),
    )


PARSERS = {"binance": parse_binance, "bybit": parse_bybit, "okx": parse_okx}
METHODS = {
    "binance": "sapiGetAccountApiRestrictions",
    "bybit": "privateGetV5UserQueryApi",
    "okx": "privateGetAccountConfig",
}
"""The ccxt method asking each exchange for the calling key's permissions."""


def parse_permissions(exchange: str, data: Any) -> KeyPermissions:
    """The exchange's answer as :class:`KeyPermissions` (``UnexpectedAnswer`` when it is
    not shaped as documented; ``KeyError`` for an exchange without a parser)."""
    return PARSERS[exchange](data)


def supported(exchange: str) -> bool:
    return exchange in PARSERS


async def check_key(
    exchange: str,
    settings: MarketSettings,
    api_key: str,
    secret: str,
    password: str | None = None,
    *,
    timeout_s: float = CHECK_TIMEOUT_S,
) -> KeyCheck:
    """Ask ``exchange`` what this key may do. Never raises (but ``CancelledError``)."""
    if not supported(exchange):
        return KeyCheck(exchange, CheckStatus.UNSUPPORTED)
    credentials = {"apiKey": api_key, "secret": secret}
    if password:
        credentials["password"] = password
    client = ccxt_client(exchange, settings, credentials=credentials)
    client.logger = _QUIET
    try:
        answer = await asyncio.wait_for(getattr(client, METHODS[exchange])(), timeout_s)
        return KeyCheck(exchange, CheckStatus.VERIFIED, parse_permissions(exchange, answer))
    except asyncio.CancelledError:
        raise
    except (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended, ccxt.BadRequest) as exc:
        # a wrong key, secret or passphrase (binance answers a bad signature as a bad request)
        return KeyCheck(exchange, CheckStatus.REJECTED, detail=type(exc).__name__)
    except (ccxt.NetworkError, TimeoutError, OSError) as exc:
        return KeyCheck(exchange, CheckStatus.UNREACHABLE, detail=type(exc).__name__)
    except (ccxt.BaseError, UnexpectedAnswer, KeyError, TypeError, IndexError) as exc:
        log.warning("%s: the key permission answer was not understood (%s)", exchange, type(exc).__name__)
        return KeyCheck(exchange, CheckStatus.UNREACHABLE, detail=type(exc).__name__)
    finally:
        await client.close()
