"""``alerts:monitor``: watches the pipeline's actors, exports Prometheus metrics, alerts SuperAdmins.

Every ``interval_s`` the monitor asks the market-data coordinators (``md:<exchange>``)
and the queue shards (``uq:NNN``) for their stats, by name in ``settings.ray.namespace``
(an actor that is missing, restarting or slow simply counts as "did not answer"), then

1. exports what it saw with Ray's metrics API (:mod:`ray.util.metrics`; Ray's metrics
   agent on each node serves them to Prometheus on the node's metrics export port,
   names prefixed ``ray_``):

   | metric | type | tags |
   |---|---|---|
   | ``arbflow_market_data_age_seconds`` | gauge | ``exchange`` |
   | ``arbflow_ingest_lag_seconds`` | gauge | ``exchange`` |
   | ``arbflow_deliveries_sent`` / ``_failed`` | counter (``…_total``) | ``shard`` |
   | ``arbflow_telegram_429`` | counter (``…_total``) | ``shard`` |
   | ``arbflow_queue_pending`` | gauge | ``shard`` |
   | ``arbflow_queue_loop_lag_p99_seconds`` | gauge (the shard's event loop, last 10 min) | ``shard`` |
   | ``arbflow_delivery_failure_rate`` | gauge (over the rules' window) | |
   | ``arbflow_alert_incidents_open`` | gauge | ``kind`` |
   | ``arbflow_actor_up`` | gauge (1 answered, 0 not) | ``actor`` |
   | ``arbflow_exchange_messages`` / ``_reconnects`` | counter (``…_total``) | ``exchange`` |
   | ``arbflow_exchange_errors`` | counter (``…_total``) | ``exchange``, ``error`` (class) |
   | ``arbflow_exchange_messages_per_second`` | gauge | ``exchange`` |
   | ``arbflow_exchange_breaker_state`` | gauge (0 closed, 0.5 half-open, 1 open) | ``exchange`` |
   | ``arbflow_exchange_book_age_p99_seconds`` | gauge | ``exchange`` |
   | ``arbflow_exchange_dropped_symbols`` | gauge | ``exchange`` |
   | ``arbflow_exchange_source_down_seconds`` | gauge | ``exchange`` |

   (the ``arbflow_exchange_*`` series come from the live source of each ``md:<exchange>``)

2. evaluates :mod:`core.alerts` on that snapshot, and
3. sends every incident's "opened" and "resolved" message (``notify.texts.alert_notice``)
   to each SuperAdmin (``settings.superadmin_ids``) through the bot.

The rules' state (open incidents, the delivery samples) and an outbox of notices not yet
delivered to every SuperAdmin live in Redis (``alerts:state``, ``alerts:outbox``; the
last 1,000 notices in ``alerts:log``). The state is saved before anything is sent, so a
monitor restarted by Ray picks up its open incidents and does not announce them again;
a notice whose sending was cut short is finished by the next poll (a SuperAdmin may, in
that one case, get it twice).

The actor starts polling as soon as it is constructed (also after a restart by Ray):
:func:`get_monitor` is all a caller needs. :class:`AlertMonitor` is the plain class
(stats source, store, sender and metrics injected), :class:`AlertMonitorActor` the thin
Ray wrapper.

The package, one room per job: ``ports`` (the ports and the outbox item), ``metrics`` (the
Prometheus exporter), ``adapters`` (Ray, Redis, Telegram), ``engine``
(:class:`AlertMonitor`), ``actor`` (:class:`AlertMonitorActor`, :func:`get_monitor`).
"""

from actors.monitor.actor import MONITOR_NAME, AlertMonitorActor, get_monitor
from actors.monitor.adapters import RayStatsSource, RedisAlertStore, TelegramAlertSender
from actors.monitor.engine import AlertMonitor
from actors.monitor.metrics import COUNTERS, GAUGES, MetricsExporter
from actors.monitor.ports import AlertSender, AlertStore, OutboxItem, SendVerdict, StatsSource

__all__ = [
    "COUNTERS",
    "GAUGES",
    "MONITOR_NAME",
    "AlertMonitor",
    "AlertMonitorActor",
    "AlertSender",
    "AlertStore",
    "MetricsExporter",
    "OutboxItem",
    "RayStatsSource",
    "RedisAlertStore",
    "SendVerdict",
    "StatsSource",
    "TelegramAlertSender",
    "get_monitor",
]
