"""Transfer status for the live source: can each symbol's base asset be deposited and
withdrawn on this exchange, over which networks, at what fee (``fetch_currencies`` /
``fetch_deposit_withdraw_fees``, usually private: asked with the operator's read-only keys,
``ARBFLOW_EXCHANGE_KEYS``). What the exchange does not tell stays unknown; a failed
refresh keeps the last answer. A mixin of ``CcxtMarketSource``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from core.models import TransferStatus
from core.settings import ExchangeKey, MarketSettings
from core.transfers import statuses_from_currencies
from pipeline.sources.ccxt_rules import ccxt_client

_KEYED_LOG = logging.getLogger("arbflow.keyed_ccxt")
"""The keyed client's ccxt logger: held at WARNING, so no DEBUG line carries the API key."""
_KEYED_LOG.setLevel(logging.WARNING)


class TransferChecks:
    """The live source's transfer status (a mixin of ``CcxtMarketSource``)."""

    exchange_id: str
    exchange: Any
    symbols: list[str]
    settings: MarketSettings
    transfer: dict[str, TransferStatus]
    transfer_checked: bool
    _keys: ExchangeKey | None
    _keyed: Any
    _closed: bool
    _sleep: Callable[[float], Awaitable[Any]]

    def _say_once(self, key: str, message: str, *args: Any) -> None:  # pragma: no cover - in live
        raise NotImplementedError

    def _keyed_client(self) -> Any:
        """A REST client with the operator's read-only keys (transfer status only), or the
        market-data client when there are none (most exchanges then refuse: unknown)."""
        if self._keys is None:
            return self.exchange
        if self._keyed is None:
            client = ccxt_client(self.exchange_id, self.settings, credentials=self._keys.ccxt_config())
            client.logger = _KEYED_LOG  # ccxt logs request headers (the API key) at DEBUG
            self._keyed = client
        return self._keyed

    async def _load_transfer_status(self) -> None:
        """Deposit/withdraw status per network and withdrawal fees of the symbols' base
        assets, where the exchange tells (with keys, usually). What it does not tell stays
        unknown; a failed refresh keeps the last answer."""
        client = self._keyed_client()
        assets = {s.split("/")[0] for s in self.symbols}
        currencies: Mapping[str, Any] = {}
        fees: Mapping[str, Any] = {}
        for feature, method in (
            ("fetchCurrencies", "fetch_currencies"),
            ("fetchDepositWithdrawFees", "fetch_deposit_withdraw_fees"),
        ):
            if not client.has.get(feature):
                continue
            if (
                feature == "fetchDepositWithdrawFees"
                and currencies
                and all(
                    isinstance(currencies.get(a), Mapping) and currencies[a].get("networks") for a in assets
                )
            ):
                continue  # the currencies carried every network's fee already
            try:
                got = await getattr(client, method)()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # often private: without keys the status stays unknown
                self._say_once(
                    f"transfer:{method}",
                    "%s: %s unavailable (%s); transfer status unknown%s",
                    self.exchange_id,
                    method,
                    type(exc).__name__,
                    ""
                    if self._keys
                    else f" (set ARBFLOW_EXCHANGE_KEYS__{self.exchange_id.upper()}__API_KEY/SECRET)",
                )
                continue
            if feature == "fetchCurrencies":
                currencies = got or {}
            else:
                fees = got or {}
        self.transfer_checked = True
        if currencies or fees:
            self.transfer = statuses_from_currencies(currencies, assets, fees)

    async def _transfer_loop(self) -> None:
        while not self._closed:
            await self._sleep(self.settings.transfer_refresh_s)
            await self._load_transfer_status()
