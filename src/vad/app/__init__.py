"""The entry points and what only they need."""
