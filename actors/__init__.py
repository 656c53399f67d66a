"""arbflow actors."""
