"""arbflow serve."""
