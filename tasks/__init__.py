"""Celery tasks: thin, idempotent, they take ids and delegate to app/services."""
