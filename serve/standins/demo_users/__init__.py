"""The demo's Telegram side: the sandbox, the bot on Ray Serve, and simulated users.

One room per job: ``plan`` (who the users are, seeded), ``users`` (what each one does
through the sandbox), ``simulation`` (:class:`TelegramDemo`: the sandbox, Serve and the
bot shards, the workers, the figures), ``report`` (the figures and the summary tables).
No production path imports this package (an ``import-linter`` contract).
"""

from serve.standins.demo_users.plan import UserPlan, plan_users
from serve.standins.demo_users.report import TelegramReport, session_events, telegram_tables, try_by_hand_hint
from serve.standins.demo_users.simulation import TelegramDemo

__all__ = [
    "TelegramDemo",
    "TelegramReport",
    "UserPlan",
    "plan_users",
    "session_events",
    "telegram_tables",
    "try_by_hand_hint",
]
