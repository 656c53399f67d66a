"""Talking to Telegram users, for the bot and the actors alike: the aiogram ``Bot`` client
(``client``), the push sender (``notifier``), the texts and their languages (``texts``,
``i18n``, ``locales``) and the push keyboard (``keyboards``). Below ``bot`` and ``actors``,
above ``state``."""
