"""Recent uploads: the vectors of images uploaded to search with, kept a short while so the
page can change k or a filter without a new upload (and without a model run).

Kept in this process's memory only (nothing is written), at most `limit` of them (the least
recently used is dropped first), each for `keep_s` seconds after its last use, under a random
id (`secrets.token_urlsafe`) that only the page which uploaded it knows.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class RecentUploads:
    """id -> (file name, query vector: float32 array of shape (d,)), bounded and expiring.
    Safe to use from the server's threads."""

    def __init__(
        self, limit: int, keep_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.keep_s = keep_s
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[float, str, Any]] = OrderedDict()

    def add(self, name: str, vector: Any) -> str:
        """Keep an upload's vector; returns its id."""
        upload_id = secrets.token_urlsafe(18)
        with self._lock:
            self._expire()
            self._kept[upload_id] = (self._clock() + self.keep_s, name, vector)
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)
        return upload_id

    def get(self, upload_id: str) -> tuple[str, Any] | None:
        """(name, vector) of a kept upload, or None when unknown or expired; a use keeps it
        `keep_s` seconds longer."""
        with self._lock:
            self._expire()
            found = self._kept.pop(upload_id, None)
            if found is None:
                return None
            self._kept[upload_id] = (self._clock() + self.keep_s, found[1], found[2])
            return found[1], found[2]

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._kept)

    def _expire(self) -> None:
        now = self._clock()
        for upload_id in [i for i, (until, _, _) in self._kept.items() if until <= now]:
            del self._kept[upload_id]
