"""arbflow pipeline."""
