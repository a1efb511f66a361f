"""Alembic migrations for SQLite and PostgreSQL (run by ``loyalty migrate``)."""
