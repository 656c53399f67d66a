"""arbflow bot."""
