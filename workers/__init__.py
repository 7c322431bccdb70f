"""The Celery side: the app bound to Flask and the signal handlers that chain promotion."""
