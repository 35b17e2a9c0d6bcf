"""`retrieval check [--repair] [--json]` and `Index.check`: find every kind of problem, change
nothing without --repair, rebuild what derives from the catalogue with it."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import _procs as P
import numpy as np
import pytest
from _procs import one_cpu  # noqa: F401 - autouse fixture
from conftest import run_cli

from retrieval import Index
from retrieval.store import vectors
from retrieval.store.files import WriterLock

N = 12


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("check")
    P.make_images(root / "photos", N)
    index = root / "index"
    assert run_cli("index", root / "photos", "--index", index, *P.FAST).exit_code == 0
    return index


@pytest.fixture
def copy(built: Path, tmp_path: Path) -> Path:
    index = tmp_path / "index"
    shutil.copytree(built, index)
    return index


def _generation(index: Path) -> int:
    return Index(index).info()["generation"]


def _files(index: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in index.iterdir() if p.is_file()}


def test_healthy_index(copy: Path):
    generation = _generation(copy)
    result = run_cli("check", "--index", copy)
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        f"checked {copy}: {N} images, 0 failed, generation {generation}\nok: no problems found\n"
    )
    result = run_cli("check", "--index", copy, "--json")
    assert result.exit_code == 0
    assert result.json() == {
        "index": str(copy),
        "ok": True,
        "images": N,
        "failed": 0,
        "generation": generation,
        "problems": [],
        "missing_files": {"count": 0, "examples": []},
    }


# -- each kind of problem ----------------------------------------------------------------------


def _stored(index: Path) -> tuple[np.ndarray, np.ndarray]:
    dtype = json.loads((index / "manifest.json").read_text())["vector_dtype"]
    rows = sorted(P.rows(index).values(), key=lambda r: r.id)
    ids = np.array([r.id for r in rows], np.int64)
    xb = np.stack([np.frombuffer(r.vector, dtype) for r in rows])
    return ids, xb.astype(np.float32)


def _rewrite_vectors(transform: Callable[[np.ndarray, np.ndarray], tuple]) -> Callable:
    """A damage that writes a sound (checksummed) vectors.faiss holding the wrong content."""

    def damage(index: Path) -> None:
        ids, xb = _stored(index)
        ids, xb, generation = transform(ids, xb.copy(), _generation(index))
        path = str(index / "vectors.faiss")
        owner = vectors.read(path).catalog_id  # this index's own: only the content is wrong
        vectors.write(path, vectors.build(xb, ids), generation, catalog_id=owner)

    return damage


def _changed_vector(ids, xb, generation):
    xb[3] = -xb[3]
    return ids, xb, generation


def _truncate(index: Path) -> None:
    path = index / "vectors.faiss"
    path.write_bytes(path.read_bytes()[:100])


PROBLEMS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "temp-file": (
        lambda index: (index / ".vectors.faiss.tmp-4242-17").write_bytes(b"half"),
        ".vectors.faiss.tmp-4242-17: temporary file left by an interrupted run",
        "deletes it",
    ),
    "manifest-missing": (
        lambda index: (index / "manifest.json").unlink(),
        "manifest.json: missing",
        "rewrites it from the catalogue",
    ),
    "manifest-edited": (
        lambda index: (index / "manifest.json").write_text("{}\n"),
        "manifest.json: differs from the catalogue's manifest",
        "rewrites it from the catalogue",
    ),
    "vectors-missing": (
        lambda index: (index / "vectors.faiss").unlink(),
        "vectors.faiss: missing",
        "rebuilds it from the catalogue",
    ),
    "vectors-truncated": (
        _truncate,
        "vectors.faiss: truncated: {cut} of {size} bytes",
        "rebuilds it from the catalogue",
    ),
    "duplicate-id": (
        _rewrite_vectors(lambda ids, xb, g: (np.r_[ids, ids[:1]], np.r_[xb, xb[:1]], g)),
        "vectors.faiss: holds 1 duplicate ids",
        "rebuilds it from the catalogue",
    ),
    "id-lacking": (
        _rewrite_vectors(lambda ids, xb, g: (ids[1:], xb[1:], g)),
        "vectors.faiss: holds 0 ids the catalogue does not and lacks 1 of its vectors",
        "rebuilds it from the catalogue",
    ),
    "id-extra": (
        _rewrite_vectors(lambda ids, xb, g: (np.r_[ids, [999]], np.r_[xb, xb[:1]], g)),
        "vectors.faiss: holds 1 ids the catalogue does not and lacks 0 of its vectors",
        "rebuilds it from the catalogue",
    ),
    "vector-changed": (
        _rewrite_vectors(_changed_vector),
        "vectors.faiss: 1 vectors differ from the ones in the catalogue",
        "rebuilds it from the catalogue",
    ),
    "future-generation": (
        _rewrite_vectors(lambda ids, xb, g: (ids, xb, g + 5)),
        "vectors.faiss: claims catalogue generation {future}, newer than the catalogue's {g}",
        "rebuilds it from the catalogue",
    ),
}


@pytest.mark.parametrize("kind", list(PROBLEMS))
def test_problem_found_then_repaired(copy: Path, kind: str):
    damage, problem, repair = PROBLEMS[kind]
    generation = _generation(copy)
    header_size = vectors._HEADER.size
    size = (copy / "vectors.faiss").stat().st_size - header_size
    damage(copy)
    problem = problem.format(cut=100 - header_size, size=size, g=generation, future=generation + 5)
    before = _files(copy)
    header = f"checked {copy}: {N} images, 0 failed, generation {generation}"

    result = run_cli("check", "--index", copy)
    assert (result.exit_code, result.stderr) == (1, "")
    assert result.stdout.splitlines() == [
        header,
        f"  {problem} (--repair {repair})",
        f"1 problem(s) found; repair them with `retrieval check --repair --index {copy}`",
    ]
    assert _files(copy) == before  # without --repair nothing changes

    result = run_cli("check", "--index", copy, "--repair", "--json")
    assert (result.exit_code, result.stderr) == (0, "")
    file, _, text = problem.partition(": ")
    assert result.json()["problems"] == [
        {"file": file, "problem": text, "repair": repair, "repaired": True}
    ]
    assert result.json()["ok"] is True

    result = run_cli("check", "--index", copy)
    assert result.stdout.splitlines() == [header, "ok: no problems found"]
    P.verify(copy)


def test_several_problems_at_once(copy: Path):
    for kind in ("vector-changed", "temp-file", "manifest-edited"):  # info() would fix the manifest
        PROBLEMS[kind][0](copy)
    result = run_cli("check", "--index", copy, "--repair")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[-1] == "ok: 3 problem(s) found and repaired"
    assert [line.split(":")[0].strip() for line in lines[1:-1]] == [
        ".vectors.faiss.tmp-4242-17",
        "manifest.json",
        "vectors.faiss",
    ]
    assert all(line.endswith(")") and "(repaired: " in line for line in lines[1:-1])
    assert Index(copy).check().ok


def test_unrepairable_problem_keeps_exit_1(copy: Path):
    """vectors.faiss is a directory: nothing can be written there; --repair says so."""
    (copy / "vectors.faiss").unlink()
    (copy / "vectors.faiss").mkdir()
    result = run_cli("check", "--index", copy, "--repair")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: could not save the rebuilt vector index: could not write vector index "
    )


# -- the catalogue, the lock, a missing index ------------------------------------------------------


def _zero_page_of(name: str) -> Callable[[Path], None]:
    def damage(index: Path) -> None:
        path = index / "catalog.sqlite"
        conn = sqlite3.connect(path)
        query = "SELECT rootpage FROM sqlite_master WHERE name = ?"
        page = conn.execute(query, (name,)).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
        data = bytearray(path.read_bytes())
        data[(page - 1) * size : page * size] = bytes(size)
        path.write_bytes(bytes(data))

    return damage


@pytest.mark.parametrize("repair", [False, True])
def test_damaged_catalogue(copy: Path, repair: bool):
    """An index b-tree that search and info never read is damaged: they work, check finds it."""
    _zero_page_of("ix_images_content_hash")(copy)
    assert run_cli("info", "--index", copy).exit_code == 0
    result = run_cli("check", "--index", copy, *(["--repair"] if repair else []))
    path = copy / "catalog.sqlite"
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: the catalogue {path} is damaged (database disk image is malformed); restore "
        f"it from a backup, or move the index away and rebuild it: "
        f"`retrieval index --index {copy} FOLDER...`\n"
    )


def test_check_waits_for_a_writer_or_refuses(copy: Path):
    lock = WriterLock(str(copy / "writer.lock"))
    lock.acquire()
    try:
        result = run_cli("check", "--index", copy)
        assert result.exit_code == 1
        holder = (copy / "writer.lock").read_text()
        assert result.stderr == (
            f"error: another retrieval process ({holder}) is writing to {copy}; wait for it "
            "to finish, or pass --wait to queue behind it\n"
        )
        threading.Timer(0.3, lock.release).start()
        result = run_cli("check", "--index", copy, "--wait", "--json")
        assert (result.exit_code, result.json()["ok"]) == (0, True)
    finally:
        lock.release()


def test_no_index(tmp_path: Path):
    result = run_cli("check", "--index", tmp_path / "nothing")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: no index at {tmp_path / 'nothing'}: build one with "
        f"`retrieval index --index {tmp_path / 'nothing'} FOLDER`\n"
    )


# -- other index types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options", [["--index-type", "hnsw"], ["--vector-dtype", "float16"]], ids=["hnsw", "fp16"]
)
def test_other_layouts_after_updates_check_clean(tmp_path: Path, options: list[str]):
    """HNSW (deleted ids stay as tombstones) and fp16 codes: a sound index checks clean."""
    photos, index = tmp_path / "photos", tmp_path / "index"
    P.make_images(photos, N)
    assert run_cli("index", photos, "--index", index, *P.FAST, *options).exit_code == 0
    for name in ("img_0001.png", "img_0005.png"):
        os.unlink(photos / name)
    P.make_images(photos, 3, seed=4, start=50)
    assert run_cli("index", photos, "--index", index, *P.FAST).exit_code == 0
    report = Index(index).check()
    assert (report.ok, report.images, report.problems) == (True, N + 1, ())
    _rewrite_vectors(_changed_vector)(index)
    assert [p.problem for p in Index(index).check().problems] == [
        "1 vectors differ from the ones in the catalogue"
    ]


def test_library_api(copy: Path):
    (copy / "manifest.json").unlink()
    report = Index(copy).check()
    assert not report.ok and [p.file for p in report.problems] == ["manifest.json"]
    assert not (copy / "manifest.json").exists()
    report = Index(copy).check(repair=True)
    assert report.ok and report.problems[0].repaired
    assert json.loads((copy / "manifest.json").read_text())["model"] == "test_resnet"
