"""One writer at a time, in one process as across processes: the writer lock is exclusive."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from retrieval.errors import IndexBusy
from retrieval.store.files import WriterLock


def test_a_second_writer_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    path = str(tmp_path / "writer.lock")
    first, second = WriterLock(path), WriterLock(path)
    first.acquire()
    try:
        with pytest.raises(IndexBusy) as caught:
            second.acquire()
        assert str(caught.value) == (
            f"another retrieval process (pid {os.getpid()} on {socket.gethostname()}) is "
            f"writing to {tmp_path}; wait for it to finish, or pass --wait to queue behind it"
        )
    finally:
        first.release()
    with second.held():
        with pytest.raises(IndexBusy):
            first.acquire()
