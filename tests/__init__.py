"""The test suite.

Before anything imports the app: the session's Prometheus values go to a
directory of its own (app/metrics reads METRICS_DIR once, at import), not to the
checkout's default one that a `make run` beside the tests reads. Subprocesses
started with the session's environment (workers, gunicorn, Flower) write there
too. It goes when the session ends.
"""

import atexit
import os
import shutil
import tempfile

if "METRICS_DIR" not in os.environ:
    os.environ["METRICS_DIR"] = tempfile.mkdtemp(prefix="batchq-test-metrics-")
    atexit.register(shutil.rmtree, os.environ["METRICS_DIR"], ignore_errors=True)
