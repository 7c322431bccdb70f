"""gunicorn settings for the web process (PORT, BIND and WEB_WORKERS from the environment)."""

import os

bind = os.environ.get("BIND") or f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_WORKERS", "2"))
# gthread: requests run in threads, so a slow client or a live stream pins a thread, not a process.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = 60
graceful_timeout = 10
control_socket_disable = True
accesslog = "-"
