"""The host's files added up, without the one a process had only begun to create.

prometheus_client creates a process's file and only then sizes it, so for a
moment it exists with 0 bytes; its reader then raises on the missing header and
the whole scrape fails, every other process's values with it. A process killed
in that moment (a pool child past its hard time limit) leaves the empty file for
good, and every scrape after it fails: prometheus/client_python#1199, open on
the pinned 0.26.0. An empty file holds nothing yet, so it is left out.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

# A file's header: 4 bytes of "bytes used", 4 of padding (prometheus_client's mmap_dict).
HEADER_BYTES = 8


class HostCollector(MultiProcessCollector):
    """MultiProcessCollector over the files that have a header."""

    def collect(self) -> Iterable[Metric]:
        files = [path for path in glob.glob(os.path.join(self._path, "*.db")) if _has_header(path)]
        return self.merge(files, accumulate=True)


def _has_header(path: str) -> bool:
    try:
        return os.path.getsize(path) >= HEADER_BYTES
    except OSError:  # removed while we looked (a restart's clean-up)
        return False
