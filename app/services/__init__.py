"""Use cases: each owns its transaction; views, API handlers and tasks call these."""

# Row ids are PostgreSQL `integer` columns. A larger number names no row, and
# must not reach a query, where comparing it with an integer column fails.
MAX_ID = 2**31 - 1


def storable_id(value: int) -> bool:
    """Tell whether an id can name a row at all."""
    return 0 < value <= MAX_ID
