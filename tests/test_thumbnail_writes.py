"""A first thumbnail costs its decode and one write (no fsync; the cache lock is held only to
link the entry into place and count its bytes), and concurrent writers still count each
entry once."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from test_thumbnails import build, entries

from retrieval.store.thumbnails import ThumbnailCache


def test_a_first_thumbnail_is_one_write_with_no_fsync(tmp_path, monkeypatch):
    """A cache entry can always be made again: it is not worth an fsync (four of them, each
    under the cache-wide lock, were what serialised a server's first views)."""
    index, ids = build(tmp_path, n=1)
    (image_id,) = ids.values()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    made = index.thumbnail(image_id)
    (entry,) = entries(index)
    assert entry.read_bytes() == made
    assert synced == []
    usage = Path(index.directory) / "thumbnails" / "usage"
    assert int(usage.read_text()) == entry.stat().st_size
    assert index.thumbnail(image_id) == made  # and a second view is the read


def test_many_writers_of_distinct_and_equal_entries_count_each_once(tmp_path):
    cache = ThumbnailCache(str(tmp_path))
    blobs = {
        f"{i:032x}-s256.jpg": b"\xff\xd8" + bytes([i]) * (100 + i) + b"\xff\xd9" for i in range(40)
    }
    errors: list[BaseException] = []

    def fill(offset: int) -> None:
        try:
            keys = sorted(blobs)
            for key in keys[offset:] + keys[:offset]:
                assert cache.put(key, blobs[key])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fill, args=(k * 7,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    for key, data in blobs.items():
        assert cache.get(key) == data
    assert int((tmp_path / "thumbnails" / "usage").read_text()) == sum(map(len, blobs.values()))
    assert cache.inspect(verify=True).temps == ()
