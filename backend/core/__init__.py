"""Configuration, database, errors and security of the service."""
