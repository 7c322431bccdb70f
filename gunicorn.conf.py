"""gunicorn settings for the web process (BIND, PORT and WEB_* from the environment).

Worker class: gevent. Every open page holds one Server-Sent Events stream for
minutes; under gevent a stream is a greenlet waiting on a queue, so open
streams can't starve ordinary requests the way they pin threads under gthread
(measured while choosing: 12 streams on 2x8 threads hung half the requests).
psycopg 3 (>= 3.1.14) and redis-py cooperate with gevent's monkey-patching,
which the worker applies before it loads the app. Each process still caps its
streams (LIVE_MAX_STREAMS, answered with 503 so the page polls instead).
"""

import os
import signal
import threading

from app.config import log_format
from app.logging_setup import gunicorn_logconfig

bind = os.environ.get("BIND") or f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_WORKERS", "2"))
worker_class = os.environ.get("WEB_WORKER_CLASS", "gevent")
# Concurrent connections per gevent worker: open streams plus ordinary requests.
worker_connections = int(os.environ.get("WEB_WORKER_CONNECTIONS", "1000"))
# Used only if WEB_WORKER_CLASS=gthread is chosen instead.
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = 60
graceful_timeout = 10
control_socket_disable = True
accesslog = "-"
# LOG_FORMAT=json: gunicorn's own lines, its access lines and the app's are JSON objects, one a line; the
# access line's fields include method, path, status, duration_ms and the request id the answer carried.
if log_format(os.environ) == "json":
    logconfig_dict = gunicorn_logconfig()


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("threading"))


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """End the open live streams as soon as the worker is asked to stop.

    Without this every stop or reload waits out the whole graceful timeout for
    the streams; ended streams make the browsers reconnect to a live worker.
    """
    original = worker.handle_exit
    flask_app = worker.wsgi

    def handle_exit(sig, frame):  # type: ignore[no-untyped-def]
        original(sig, frame)
        from app.live import shutdown_all

        # Not inside the signal handler itself: the hub takes locks. Under gevent the handler runs
        # as a hub callback, where starting a (patched) thread would block: spawn a greenlet.
        if _gevent_patched():
            import gevent

            gevent.spawn(shutdown_all, flask_app)
        else:
            threading.Thread(target=shutdown_all, args=(flask_app,), daemon=True).start()

    worker.handle_exit = handle_exit
    signal.signal(signal.SIGTERM, handle_exit)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """A web worker is gone: drop its live-gauge files (prometheus_client's multiprocess rule).

    Its counters and histograms stay in METRICS_DIR and go on counting in the
    host's totals, so they never go backwards when a worker is replaced.
    """
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
