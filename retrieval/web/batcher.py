"""One thread embeds every uploaded query image: the model is loaded once per process, and
uploads that arrive together (within `wait` seconds, at most `max_batch`) go to it in one
call instead of one model call per request in parallel (which would fight for the cores)."""

from __future__ import annotations

import io
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

from .. import Index, Query, QueryStream
from .settings import Settings

#: Seconds a request waits for its embedding before giving up (model load included).
EMBED_TIMEOUT = 300.0


class EmbedBatcher:
    """`embed(data, name) -> Query` from any thread; `calls` and `images` count model calls
    and the images they embedded (for tests and the bench)."""

    def __init__(self, settings: Settings, index: Index) -> None:
        self._settings = settings
        self._index = index
        self._queue: queue.Queue[tuple[bytes, str, Future[Query]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="retrieval-embed", daemon=True)
        self._embedder: Any = None
        self.calls = 0
        self.images = 0

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def embed(self, data: bytes, name: str) -> Query:
        """The upload's `Query` (its vector or its error); raises what loading the model
        raised (ModelError, IndexNotFound, ...)."""
        future: Future[Query] = Future()
        self._queue.put((data, name, future))
        return future.result(timeout=EMBED_TIMEOUT)

    def _run(self) -> None:
        if self._settings.warm:
            try:
                self._load()
            except Exception:  # noqa: BLE001 - reported to the first upload, retried then
                pass
        while (batch := self._next_batch()) is not None:
            self._embed(batch)

    def _next_batch(self) -> list[tuple[bytes, str, Future[Query]]] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self._settings.batch_wait
        while len(batch) < self._settings.max_batch:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
        return batch

    def _load(self) -> Any:
        if self._embedder is None:
            self._embedder = self._index.load_embedder(self._settings.device)
        return self._embedder

    def _embed(self, batch: list[tuple[bytes, str, Future[Query]]]) -> None:
        try:
            streams = [QueryStream(io.BytesIO(data), name) for data, name, _ in batch]
            found = self._index.embed(
                streams, embedder=self._load(), max_megapixels=self._settings.max_megapixels
            )
        except BaseException as exc:  # noqa: BLE001 - every waiting request hears of it
            for *_, future in batch:
                future.set_exception(exc)
            return
        self.calls += 1
        self.images += len(batch)
        for (*_, future), query in zip(batch, found, strict=True):
            future.set_result(query)
