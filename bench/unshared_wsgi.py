"""The web app with the table's shared render turned off: bench.viewers' baseline, every fetch its own render."""

from app import create_app

app = create_app(LIVE_SHARED_RENDER_SECONDS=0)
