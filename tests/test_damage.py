"""Damaged index files: what is derived is rebuilt with a notice, a damaged catalogue is named.

vectors.faiss and manifest.json derive from the catalogue: every kind of damage below is
detected by the command that next needs the file, which rebuilds it from the catalogue, says
so in one `retrieval: ...` line on stderr, and answers exactly as the undamaged index would.
A damaged catalog.sqlite cannot be rebuilt: every command exits 1 with one line naming the
file and what to do, never a traceback.
"""

from __future__ import annotations

import os
import random
import re
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import _procs as P
import numpy as np
import pytest
from _procs import one_cpu  # noqa: F401 - autouse fixture
from conftest import run_cli

from retrieval.store import vectors

N = 12


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(photos, index): an index of N images; tests damage copies of it."""
    photos, index = P.built_index(tmp_path_factory.mktemp("damage"), N)
    return photos, index


@pytest.fixture
def copy(built: tuple[Path, Path], tmp_path: Path) -> Path:
    return P.copy_index(built[1], tmp_path)


def _command(name: str, photos: Path, index: Path):
    if name == "search":
        return run_cli("search", photos / "img_0003.png", "--index", index, "--format", "json")
    if name == "info":
        return run_cli("info", "--index", index, "--json")
    if name == "export":
        return run_cli("export", "--index", index, "--format", "npy", "-o", index.parent / "x.npy")
    return run_cli("index", photos, "--index", index, *P.FAST, "--json")


def _answer(name: str, result) -> object:
    """The part of a command's output that must not depend on the damage."""
    data = result.json() if name != "export" else result.stdout.split(" to ")[0]
    if name == "info":
        return {k: v for k, v in data.items() if k not in ("index", "bytes_on_disk")}
    if name == "index":
        return {k: v for k, v in data.items() if k != "seconds"}
    return data


# -- vectors.faiss -----------------------------------------------------------------------------


def _flip(offset: Callable[[int], int], bit: int = 0) -> Callable[[bytes], bytes]:
    def damage(data: bytes) -> bytes:
        out = bytearray(data)
        out[offset(len(data))] ^= 1 << bit
        return bytes(out)

    return damage


def _other_dimension(data: bytes) -> bytes:
    """A sound file of this catalogue with 8-d vectors, the same generation."""
    generation = struct.unpack_from("<Q", data, 12)[0]
    xb = np.eye(8, dtype=np.float32)
    index = vectors.build(xb, np.arange(1, 9, dtype=np.int64))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "other.faiss")
        with open(path, "wb") as fh:
            fh.write(data)
        owner = vectors.read(path).catalog_id
        vectors.write(path, index, generation, catalog_id=owner)
        with open(path, "rb") as fh:
            return fh.read()


VECTOR_DAMAGE: dict[str, tuple[Callable[[bytes], bytes | None], str]] = {
    "missing": (lambda data: None, "missing"),
    "empty": (lambda data: b"", "truncated header"),
    "truncated-header": (lambda data: data[:20], "truncated header"),
    "truncated-payload": (lambda data: data[:-100], r"truncated: \d+ of \d+ bytes"),
    "appended": (lambda data: data + b"\0" * 64, r"longer than its header says: \d+ of \d+ bytes"),
    "bit-flip-payload": (
        _flip(lambda n: n // 2, 3),
        re.escape("checksum mismatch (corrupted bytes)"),
    ),
    "bit-flip-last-byte": (
        _flip(lambda n: n - 1, 7),
        re.escape("checksum mismatch (corrupted bytes)"),
    ),
    # The generation says which catalogue changes a reader must add: it is checksummed too.
    "bit-flip-generation": (
        _flip(lambda n: 12 + 5),
        re.escape("checksum mismatch (corrupted bytes)"),
    ),
    "bit-flip-magic": (_flip(lambda n: 0), "not a retrieval vector index"),
    "garbage": (
        lambda data: random.Random(0).randbytes(len(data)),
        "not a retrieval vector index",
    ),
    "other-dimension": (_other_dimension, "its dimension differs from the manifest's"),
}


@pytest.mark.parametrize("command", ["search", "info", "index"])
@pytest.mark.parametrize("kind", list(VECTOR_DAMAGE))
def test_damaged_vectors_file_is_rebuilt(built, copy: Path, kind: str, command: str):
    photos, pristine = built
    expected = _command(command, photos, pristine)
    path = copy / "vectors.faiss"
    damage, reason = VECTOR_DAMAGE[kind]
    damaged = damage(path.read_bytes())
    path.unlink()
    if damaged is not None:
        path.write_bytes(damaged)
    result = _command(command, photos, copy)
    assert result.exit_code == 0, result.stderr
    notice = (
        rf"retrieval: {re.escape(str(path))} could not be used \({reason}\); "
        rf"rebuilt it from the catalogue \({N} vectors\)"
    )
    notices = [line for line in result.stderr.splitlines() if "vectors.faiss" in line]
    assert len(notices) == 1 and re.fullmatch(notice, notices[0]), result.stderr
    assert _answer(command, result) == _answer(command, expected)
    P.verify(copy)
    assert (
        vectors.read(str(path)).generation
        == vectors.read(str(pristine / "vectors.faiss")).generation
    )
    again = _command(command, photos, copy)  # repaired for good: no second notice
    assert "vectors.faiss" not in again.stderr


# -- manifest.json ------------------------------------------------------------------------------


MANIFEST_DAMAGE: dict[str, tuple[Callable[[bytes], bytes | None], str]] = {
    "missing": (lambda data: None, "was missing"),
    "empty": (lambda data: b"", "did not match the catalogue"),
    "truncated": (lambda data: data[: len(data) // 2], "did not match the catalogue"),
    "not-utf8": (lambda data: b"\xff\xfe" + data[2:], "was unreadable"),
    "edited": (
        lambda data: data.replace(b'"test_resnet"', b'"resnet50"'),
        "did not match the catalogue",
    ),
}


@pytest.mark.parametrize("command", ["search", "info", "export", "index"])
@pytest.mark.parametrize("kind", list(MANIFEST_DAMAGE))
def test_damaged_manifest_is_rewritten(built, copy: Path, kind: str, command: str):
    photos, pristine = built
    path = copy / "manifest.json"
    original = path.read_bytes()
    damaged = MANIFEST_DAMAGE[kind][0](original)
    assert damaged != original
    path.unlink()
    if damaged is not None:
        path.write_bytes(damaged)
    result = _command(command, photos, copy)
    assert result.exit_code == 0, result.stderr
    problem = MANIFEST_DAMAGE[kind][1]
    notices = [line for line in result.stderr.splitlines() if "manifest.json" in line]
    assert notices == [f"retrieval: {path} {problem}; rewrote it from the catalogue"]
    assert path.read_bytes() == original
    assert _answer(command, result) == _answer(command, _command(command, photos, pristine))


# -- catalog.sqlite -----------------------------------------------------------------------------


def _scribble_pages(data: bytes) -> bytes:
    """Random bytes over the start of every page but the first (its b-tree headers)."""
    out, rng = bytearray(data), random.Random(1)
    size = struct.unpack_from(">H", data, 16)[0]  # the header's page size (1: 64 KiB)
    size = 65536 if size == 1 else size
    for start in range(size, len(out), size):
        out[start : start + 100] = rng.randbytes(100)
    return bytes(out)


CATALOG_DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "header": (lambda data: b"\0" * 16 + data[16:], "file is not a database"),
    "middle-pages": (_scribble_pages, "database disk image is malformed"),
    "page-1-btree": (
        lambda data: data[:100] + b"\xff" * 8 + data[108:],
        "database disk image is malformed",
    ),
    "truncated-half": (lambda data: data[: len(data) // 2], "database disk image is malformed"),
}


@pytest.mark.parametrize("command", ["search", "info", "export", "index", "check"])
@pytest.mark.parametrize("kind", list(CATALOG_DAMAGE))
def test_damaged_catalogue_is_one_clear_error(built, copy: Path, kind: str, command: str):
    photos = built[0]
    path = copy / "catalog.sqlite"
    damage, reason = CATALOG_DAMAGE[kind]
    path.write_bytes(damage(path.read_bytes()))
    if command == "check":
        result = run_cli("check", "--index", copy)
    else:
        result = _command(command, photos, copy)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: the catalogue {path} is damaged ({reason}); restore it from a backup, or "
        f"move the index away and rebuild it: `retrieval index --index {copy} FOLDER...`\n"
    )


def test_garbage_wal_and_shm_are_ignored(built, copy: Path):
    """A write-ahead log that is not one (torn, or from another database) holds no commits:
    SQLite ignores it, and the index reads as before."""
    rng = random.Random(2)
    (copy / "catalog.sqlite-wal").write_bytes(rng.randbytes(20000))
    (copy / "catalog.sqlite-shm").write_bytes(rng.randbytes(32768))
    before = P.rows(built[1])
    result = _command("index", built[0], copy)
    assert (result.exit_code, result.json()["unchanged"]) == (0, N), result.stderr
    assert P.verify(copy) == before


def test_vectors_file_of_another_index_is_rebuilt_on_search(built, copy: Path):
    """A sound, checksummed vectors.faiss of this catalogue whose ids are not its rows' (a
    cache gone wrong): the first search notices the unknown ids and rebuilds the cache."""
    photos, pristine = built
    rows = sorted(P.rows(copy).values(), key=lambda r: r.id)
    ids = np.array([r.id for r in rows], np.int64) + 1000
    xb = np.stack([np.frombuffer(r.vector, np.float32) for r in rows])
    path = copy / "vectors.faiss"
    before = vectors.read(str(path))
    # Bound to this catalogue (a cache of another one is refused by its id: test_binding.py).
    index = vectors.build(xb, ids)
    vectors.write(str(path), index, before.generation, catalog_id=before.catalog_id)
    result = _command("search", photos, copy)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"retrieval: {path} could not be used (it holds ids the catalogue does not); "
        f"rebuilt it from the catalogue ({N} vectors)"
    )
    assert result.json() == _command("search", photos, pristine).json()
    P.verify(copy)
