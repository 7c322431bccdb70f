"""The web app as before the live table was shared: bench.viewers' baseline.

Every re-fetch renders its own table and checks its session against the database.
"""

from app import create_app

app = create_app(LIVE_SHARED_RENDER_SECONDS=0, LIVE_REFETCH_SESSION_SECONDS=0)
