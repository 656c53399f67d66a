"""The online state in Redis: users, sessions, quotas, groups, payments, dedup — one room
under both ``actors`` and ``bot`` (and the lake rows that record its changes)."""
