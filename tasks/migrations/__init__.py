"""Alembic migrations of the experiment store (see tasks/migrate.py)."""
