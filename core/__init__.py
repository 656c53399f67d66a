"""arbflow core."""
