"""Use cases: each owns its transaction; views, API handlers and tasks call these."""
