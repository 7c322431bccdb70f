"""The submissions baseline: a bare Flask endpoint that inserts one row, served like the real web process.

`gunicorn --config gunicorn.conf.py bench.bare_insert:app`: the same worker
class and count as the Procfile's web process, a SQLAlchemy pool of the same
size, and nothing else: no token, no rate limit, no queue, no logging.
bench.submissions creates its table (bare_rows) before it starts the server.
"""

import os

from flask import Flask, request
from sqlalchemy import create_engine, text

TABLE = "CREATE TABLE IF NOT EXISTS bare_rows (id bigserial PRIMARY KEY, body jsonb NOT NULL, at timestamptz NOT NULL)"
_INSERT = text("INSERT INTO bare_rows (body, at) VALUES (CAST(:body AS jsonb), now()) RETURNING id")

app = Flask(__name__)
engine = create_engine(
    os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1), pool_size=10, max_overflow=20
)


@app.post("/rows")
def insert_row() -> tuple[dict[str, int], int]:
    """Insert the request's JSON as one row; answer its id."""
    with engine.begin() as connection:
        row_id = connection.execute(_INSERT, {"body": request.get_data(as_text=True)}).scalar_one()
    return {"id": row_id}, 201


@app.get("/login")  # what start_web waits on before it hands the server over
def ready() -> str:
    return "ready"
