"""I/O faults at every write step of `retrieval index`, one step number after another.

As SQLite's own harness does, each fault kind is injected at step 1, then 2, ... of a run
until a run no longer reaches the step: the catalogue commit (SQLite reports "database or
disk is full" / "disk I/O error"), the write of a temporary file, each fsync (file and
directory) and the rename. Faults persist once they start (a full disk stays full). After
every injected fault (`_check_fault`):

* the run ends with exit 1 and one `error: ...` line naming the file and what to do, or, where
  the failed write is optional (a reader's repair), exit 0 with a notice; never a traceback;
* the previous state is intact and loadable: every row that was there is still there byte
  for byte, new rows are whole batches with the right vectors, integrity_check passes and
  the vector index holds exactly the stored vectors;
* a later run without the fault completes and equals a clean build.

The runs are in-process (`conftest.run_cli`: `retrieval.cli.main` under click's CliRunner),
so the faults can be patched into `os`, `retrieval.store.files` and the SQLAlchemy engine.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import _procs as P
import pytest
from _procs import one_cpu  # noqa: F401 - autouse fixture
from conftest import run_cli
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

import retrieval.store.catalog as catalog_module
import retrieval.store.files as files_module

BEFORE, ADDED = 12, 8  # images indexed before the faulty run, and added by it (2 batches)

REASONS = {
    errno.EIO: "I/O error from the device; check the disk and run again",
    errno.ENOSPC: "no space left on the device; free some space and run again",
}
SQLITE_TEXT = {errno.EIO: "disk I/O error", errno.ENOSPC: "database or disk is full"}


@dataclass
class Setup:
    photos: Path
    before: Path  # an index of the first BEFORE images (copied, never changed)
    reference: Path  # a clean build of all BEFORE + ADDED images


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("faults")
    photos = root / "photos"
    P.make_images(photos, BEFORE)
    before = root / "before"
    assert _index(photos, before).exit_code == 0
    P.make_images(photos, ADDED, seed=1, start=100)
    reference = root / "reference"
    assert _index(photos, reference).exit_code == 0
    return Setup(photos, before, reference)


def _index(photos: Path, index: Path):
    return run_cli("index", photos, "--index", index, "--json", *P.FAST)


# -- the faults ------------------------------------------------------------------------------------


class Fault:
    """Fails every call from the `at`-th one on; counts the calls."""

    def __init__(self, at: int, code: int) -> None:
        self.at, self.code, self.calls = at, code, 0

    @property
    def fired(self) -> bool:
        return self.calls >= self.at

    def hit(self) -> bool:
        self.calls += 1
        return self.fired

    def os_error(self) -> OSError:
        return OSError(self.code, os.strerror(self.code))


@contextlib.contextmanager
def _commit_fault(fault: Fault) -> Iterator[None]:
    """Every catalogue COMMIT from the at-th fails as SQLite fails on a full or broken disk."""
    make = catalog_module._make_engine

    def faulty_engine(path: str, writer: bool):
        engine = make(path, writer)

        @event.listens_for(engine, "commit")
        def _commit(conn) -> None:
            # Only transactions that wrote (a read transaction's COMMIT touches no disk).
            if conn.connection.dbapi_connection.total_changes and fault.hit():
                orig = sqlite3.OperationalError(SQLITE_TEXT[fault.code])
                raise OperationalError("COMMIT", None, orig)

        return engine

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(catalog_module, "_make_engine", faulty_engine)
        yield


class _FaultyFile:
    """A temporary file whose writes all fail (the disk filled up, or broke, as it opened)."""

    def __init__(self, fh, fault: Fault) -> None:
        self._fh, self._fault = fh, fault

    def write(self, data) -> int:
        raise self._fault.os_error()

    def __getattr__(self, name: str):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()


@contextlib.contextmanager
def _write_fault(fault: Fault) -> Iterator[None]:
    """Writing the at-th temporary file of atomic_write (and every later one) fails."""

    def faulty_open(path, mode="r", *args, **kwargs):
        fh = open(path, mode, *args, **kwargs)
        if "w" in mode and fault.hit():
            return _FaultyFile(fh, fault)
        return fh

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files_module, "open", faulty_open, raising=False)
        yield


def _os_fault(name: str) -> Callable[[Fault], contextlib.AbstractContextManager[None]]:
    @contextlib.contextmanager
    def patch(fault: Fault) -> Iterator[None]:
        real = getattr(os, name)

        def faulty(*args, **kwargs):
            if fault.hit():
                raise fault.os_error()
            return real(*args, **kwargs)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, name, faulty)
            yield

    return patch


STEPS = {
    "commit": _commit_fault,
    "temp-write": _write_fault,
    "fsync": _os_fault("fsync"),  # the temporary file's and the directory's
    "rename": _os_fault("replace"),
}


# -- the loop --------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC], ids=["EIO", "ENOSPC"])
@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("start", ["update", "fresh"])
def test_fault_at_every_step(setup: Setup, tmp_path: Path, start: str, step: str, code: int):
    injected = 0
    for at in range(1, 50):
        index = tmp_path / f"index-{at}"
        if start == "update":
            shutil.copytree(setup.before, index)
        previous = P.rows(index)
        fault = Fault(at, code)
        with STEPS[step](fault):
            result = _index(setup.photos, index)
        if not fault.fired:
            assert result.exit_code == 0, result.stderr
            break
        injected += 1
        _check_fault(result, index, previous, setup, fault, step)
    else:
        raise AssertionError("the run never got past the faults")
    assert injected >= 1
    print(f"{start} {step} {errno.errorcode[code]}: {injected} faults injected")


def _check_fault(result, index: Path, previous: dict, setup: Setup, fault: Fault, step: str):
    where = f"{step} #{fault.at}"
    assert "Traceback" not in result.stderr, where
    lines = result.stderr.splitlines()
    if result.exit_code == 1:
        assert result.stdout == "", where
        assert re.fullmatch(_expected_error(index, step, fault.code), lines[-1]), (where, lines)
    else:  # an optional write failed (saving a rebuilt cache, say): a notice says so
        assert result.exit_code == 0, (where, result.stderr)
        reasons = (REASONS[fault.code], SQLITE_TEXT[fault.code])
        assert any(r in line for line in lines for r in reasons), (where, lines)
    # The previous state is intact: same rows byte for byte, plus whole new batches.
    now = P.verify(index) if (index / "catalog.sqlite").exists() else {}
    assert {p: now.get(p) for p in previous} == previous, where
    new = set(now) - set(previous)
    assert len(new) % 4 == 0 or len(now) == BEFORE + ADDED, where
    if previous:
        info = run_cli("info", "--index", index, "--json")
        assert (info.exit_code, info.json()["images"]) == (0, len(now)), where
    # A later run without the fault completes and equals a clean build.
    again = _index(setup.photos, index)
    assert again.exit_code == 0, (where, again.stderr)
    assert again.json()["added"] == BEFORE + ADDED - len(now), where
    assert P.temps(index) == [], where
    P.verify(index)
    P.assert_same_as(index, setup.reference)


def _expected_error(index: Path, step: str, code: int) -> str:
    if step == "commit":
        catalogue = re.escape(str(index / "catalog.sqlite"))
        return (
            rf"error: could not (write|open) the catalogue {catalogue}: "
            rf"{SQLITE_TEXT[code]}; the index is unchanged since its last finished batch"
        )
    files = "|".join(
        [
            rf"vector index {re.escape(str(index / 'vectors.faiss'))}",
            rf"manifest {re.escape(str(index / 'manifest.json'))}",
        ]
    )
    return rf"error: could not write ({files}): {re.escape(REASONS[code])}"


def test_real_sqlite_disk_full(setup: Setup, tmp_path: Path):
    """SQLite itself refuses to grow the catalogue (max_page_count) while 40 more images are
    added: one error line, the catalogue as of its last finished batch, and the run after
    the disk is freed completes."""
    # Long paths make rows large enough to outgrow the free space of the catalogue's pages.
    more = tmp_path.joinpath(*(letter * 200 for letter in "defghijk"))
    P.make_images(more, 40, seed=5, start=500)
    index = tmp_path / "index"
    shutil.copytree(setup.before, index)
    previous = P.rows(index)
    conn = sqlite3.connect(index / "catalog.sqlite")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    make = catalog_module._make_engine

    def full_engine(path: str, writer: bool):
        engine = make(path, writer)

        @event.listens_for(engine, "connect")
        def _limit(dbapi_conn, _record) -> None:
            dbapi_conn.execute(f"PRAGMA max_page_count={pages}")

        return engine

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(catalog_module, "_make_engine", full_engine)
        result = _index(more, index)
    catalogue = index / "catalog.sqlite"
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.splitlines()[-1] == (
        f"error: could not write the catalogue {catalogue}: database or disk is full; "
        "the index is unchanged since its last finished batch"
    )
    now = P.verify(index)
    assert {p: now.get(p) for p in previous} == previous
    added = len(now) - len(previous)
    assert added % 4 == 0 and added < 40  # whole batches, as many as fitted in free pages
    again = _index(more, index)
    assert (again.exit_code, again.json()["added"]) == (0, 40 - added)
    assert len(P.verify(index)) == BEFORE + 40
