"""Stand-ins for the outside world: the Telegram sandbox (`sandbox`), the exchange emulators
(`exchanges`) and the demo's simulated users (`demo_users`). No production path imports them
(an import-linter contract in pyproject.toml)."""
