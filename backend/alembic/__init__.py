"""Alembic migrations of the service (a package so that installs ship them)."""
