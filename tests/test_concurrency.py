"""One writer at a time; readers run beside it and see whole transactions.

The writer is paused mid-run with RETRIEVAL_TEST_PAUSE_AT (see
`retrieval.store.files.fault_point`), holding the writer lock with some batches committed and
the rest to do: a second `index` is refused with IndexBusy (or queues behind it with --wait),
`check` likewise, and `search`, `export` and `info` answer from exactly the committed rows.
Then readers loop while a writer commits batch after batch: every answer is one snapshot.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import _procs as P
import numpy as np
import pytest

from retrieval import Index
from retrieval.errors import IndexNotFound

DIM = 96


@pytest.fixture(scope="module")
def zyg() -> P.Zygote:
    return P.zygote()


def _busy(index: Path, pid: int) -> str:
    return (
        f"error: another retrieval process (pid {pid} on {socket.gethostname()}) is writing to "
        f"{index}; wait for it to finish, or pass --wait to queue behind it\n"
    )


def test_second_writer_and_readers_while_writing(zyg: P.Zygote, tmp_path: Path):
    photos, index, flag = tmp_path / "photos", tmp_path / "index", tmp_path / "paused"
    P.make_images(photos, 20)
    assert zyg.run(["index", str(photos), "--index", str(index), *P.FAST]).status == 0
    P.make_images(photos, 20, seed=3, start=100)
    argv = ["index", str(photos), "--index", str(index), "--json", *P.FAST]
    writer = zyg.start(argv, P.pause_env("batch-committed:2", flag))
    P.wait_for_file(flag, writer, zyg)
    committed = P.rows(index)  # 20 before + 2 batches of 4; the cache still holds 20
    assert len(committed) == 28

    second = zyg.run(argv)
    assert (second.status, second.stderr, second.stdout) == (1, _busy(index, writer.pid), "")
    check = zyg.run(["check", "--index", str(index)])
    assert (check.status, check.stderr) == (1, _busy(index, writer.pid))

    waiter = zyg.start([*argv, "--wait"])
    out = tmp_path / "export.npy"
    query = photos / "img_0107.png"  # committed in the paused run
    readers = {
        "info": zyg.start(["info", "--index", str(index), "--json"]),
        "export": zyg.start(["export", "--index", str(index), "--format", "npy", "-o", str(out)]),
        "search": zyg.start(
            ["search", str(query), "--index", str(index), "-k", "100", "--format", "json"]
        ),
    }
    for name, run in readers.items():
        assert zyg.wait(run) == 0, (name, run.stderr)
        assert "error" not in run.stderr, (name, run.stderr)
    assert readers["info"].json()["images"] == 28
    assert readers["export"].stdout.startswith(f"exported 28 embeddings ({DIM}-d) to ")
    matrix = np.load(out)
    sidecar = json.loads((tmp_path / "export.rows.json").read_text())["rows"]
    assert matrix.shape == (28, DIM) and len(sidecar) == 28
    for row, entry in zip(matrix, sidecar, strict=True):
        stored = committed[entry["path"].encode()]
        assert np.array_equal(row, np.frombuffer(stored.vector, np.float32))
    hits = readers["search"].json()[0]["results"]
    assert sorted(h["path"].encode() for h in hits) == sorted(committed)
    assert hits[0]["path"] == str(query) and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)

    assert zyg.poll(waiter, timeout=0.3) is None  # queued behind the writer
    flag.unlink()  # let the writer go on
    assert zyg.wait(writer) == 0, writer.stderr
    assert writer.json()["added"] == 20
    assert zyg.wait(waiter) == 0, waiter.stderr
    assert (waiter.json()["added"], waiter.json()["unchanged"]) == (0, 40)
    assert len(P.verify(index)) == 40


def test_readers_see_whole_batches_while_a_writer_commits(zyg: P.Zygote, tmp_path: Path):
    """info, export and search in a loop beside a fresh build committing 2 images at a time:
    each answer holds a whole number of batches, counts never go back, scores are those of
    the stored vectors, and every path is a catalogue path."""
    photos, index, flag = tmp_path / "photos", tmp_path / "index", tmp_path / "paused"
    n = 40
    P.make_images(photos, n)
    argv = ["index", str(photos), "--index", str(index), *P.FAST, "--batch-size", "2"]
    writer = zyg.start(argv, P.pause_env("batch-committed:1", flag))
    P.wait_for_file(flag, writer, zyg)
    flag.unlink()
    xq = None
    counts: list[int] = []
    hits: list[tuple[bytes, float]] = []
    while True:
        running = zyg.poll(writer) is None
        try:
            counts += _observe(index, tmp_path / "export.npy", xq, hits)
        except IndexNotFound:  # before the first manifest is committed
            continue
        if xq is None:
            first = next(iter(P.rows(index).values()))
            xq = np.frombuffer(first.vector, np.float32)[None, :]
        if not running:
            break
    assert zyg.wait(writer) == 0, writer.stderr
    assert counts == sorted(counts), counts  # snapshots never go back in time
    assert all(c % 2 == 0 for c in counts) and counts[-1] == n
    assert any(0 < c < n for c in counts), counts  # some reads did overlap the writes
    final = P.rows(index)
    for path, score in hits:
        expected = np.frombuffer(final[path].vector, np.float32) @ xq[0]
        assert score == pytest.approx(float(expected), abs=1e-5)
    P.verify(index)


def _observe(
    index: Path, out: Path, xq: np.ndarray | None, hits: list[tuple[bytes, float]]
) -> list[int]:
    """One round of reads; returns the image count each read saw, in order."""
    library = Index(index)
    seen = [library.info()["images"]]
    report = library.export(out, "npy")
    rows = json.loads(out.with_suffix(".rows.json").read_text())["rows"]
    assert report.rows == len(rows) == len(np.load(out))
    assert len({r["id"] for r in rows}) == len(rows)
    seen.append(report.rows)
    if xq is not None:
        found = library.search_vectors(xq, k=1000)[0].results
        assert len({h.id for h in found}) == len(found)
        hits.extend((h.path, h.score) for h in found)
        seen.append(len(found))
    return seen


def test_reader_before_the_first_tables_exist(tmp_path: Path):
    """A reader that arrives while the first run is still creating the catalogue (or after
    that run was killed there) finds no index yet, not a damaged one."""
    index = tmp_path / "index"
    index.mkdir()
    (index / "catalog.sqlite").write_bytes(b"")  # created, no tables yet
    with pytest.raises(IndexNotFound):
        Index(index).info()
    with pytest.raises(IndexNotFound):
        Index(index).check()
