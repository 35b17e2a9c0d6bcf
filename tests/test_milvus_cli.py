"""`--vectors milvus:...` walked through the CLI as a new user would: what it says on a first
run, on a URI that cannot work, in `info`, and what its exports carry (Milvus Lite in process,
files under tmp_path; a closed loopback port stands for an unreachable server; one run of
`python -m retrieval` against a real Milvus server, `milvus_server`)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from _procs import free_port
from conftest import TINY, make_photos, run_cli, run_module

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
pa_parquet = pytest.importorskip("pyarrow.parquet")

#: TINY without --quiet: these tests read the notices.
LOUD = tuple(a for a in TINY if a != "--quiet")


@pytest.fixture(autouse=True, scope="module")
def _nothing_left_running():
    yield
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()


@pytest.fixture(scope="module")
def milvus_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(index dir, photos folder, stderr of the first `index` run) of a new Milvus Lite index."""
    root = tmp_path_factory.mktemp("milvus-cli")
    photos = root / "photos"
    make_photos(photos, range(4))
    directory = root / "index"
    result = run_cli("index", photos, "--index", directory, *LOUD, "--vectors", "milvus:")
    assert result.exit_code == 0, result.stderr
    return directory, photos, result.stderr


def test_a_new_milvus_index_does_not_claim_a_rebuild(milvus_index) -> None:
    _, _, stderr = milvus_index
    assert "could not be used" not in stderr, stderr
    assert "rebuilt" not in stderr, stderr


def _no_uri(manifest: dict, directory: Path) -> None:
    assert "vectors" not in manifest, manifest
    assert str(directory) not in json.dumps(manifest)


def test_exports_of_a_milvus_index_carry_no_milvus_uri(milvus_index, tmp_path: Path) -> None:
    directory = milvus_index[0]
    parquet, npy, layout = tmp_path / "all.parquet", tmp_path / "all.npy", tmp_path / "lay"
    for out, more in (
        (parquet, ()),
        (npy, ("--format", "npy")),
        (layout, ("--layout", "clip-retrieval")),
    ):
        result = run_cli("export", "--index", directory, "-o", out, *more)
        assert result.exit_code == 0, result.stderr
    metadata = pa_parquet.read_schema(parquet).metadata
    _no_uri(json.loads(metadata[b"retrieval.manifest"]), directory)
    sidecar = json.loads(Path(f"{npy}").with_suffix(".rows.json").read_text())
    _no_uri(sidecar["manifest"], directory)
    _no_uri(json.loads((layout / "manifest.json").read_text())["manifest"], directory)
    # and each imports into a plain FAISS index
    for i, source in enumerate((parquet, layout)):
        target = tmp_path / f"plain{i}"
        assert run_cli("import", source, "--index", target).exit_code == 0
        assert "vectors" not in json.loads((target / "manifest.json").read_text())


def _file_bytes(directory: Path) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(directory)
        for name in names
    )


def test_info_counts_the_lite_file_and_the_thumbnails(milvus_index) -> None:
    directory = milvus_index[0]
    thumbnails = directory / "thumbnails" / "ab"
    thumbnails.mkdir(parents=True, exist_ok=True)
    (thumbnails / "cached.webp").write_bytes(b"x" * 300_000)
    result = run_cli("info", "--index", directory, "--json")
    assert result.exit_code == 0, result.stderr
    on_disk = result.json()["bytes_on_disk"]
    assert _file_bytes(directory / "vectors.milvus.db") > 0
    assert on_disk == _file_bytes(directory)
    assert on_disk > 300_000 + (directory / "catalog.sqlite").stat().st_size


def _one_error_line(result, start: str) -> str:
    """The one `error:` line (the last; before it at most the `embedding with` notice)."""
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    assert all(line.startswith("retrieval: embedding with") for line in lines[:-1]), lines
    assert lines[-1].startswith(start), lines[-1]
    assert "Exception" not in lines[-1] and "Traceback" not in result.stderr
    return lines[-1]


def test_an_unreachable_server_is_one_line_and_makes_no_index(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, range(2))
    uri = f"http://127.0.0.1:{free_port()}"  # a free port: nothing listens there
    started = time.monotonic()
    result = run_cli(
        "index", photos, "--index", tmp_path / "i", *LOUD, "--vectors", f"milvus:{uri}"
    )
    assert time.monotonic() - started < 60
    line = _one_error_line(result, f"error: cannot reach Milvus at {uri}")
    assert "check the URI" in line
    assert not (tmp_path / "i" / "catalog.sqlite").exists()


def test_a_lite_file_in_a_missing_folder_says_so(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, range(2))
    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    result = run_cli(
        "index", photos, "--index", tmp_path / "i", *LOUD, "--vectors", f"milvus:{missing}"
    )
    line = _one_error_line(result, "error: ")
    assert f"{missing.parent} does not exist" in line and "another process" not in line
    assert not (tmp_path / "i" / "catalog.sqlite").exists()


def test_a_moved_or_copied_index_finds_its_own_lite_file(tmp_path: Path) -> None:
    import shutil

    photos = tmp_path / "photos"
    make_photos(photos, range(3))
    first = tmp_path / "first"
    result = run_cli("index", photos, "--index", first, *TINY, "--vectors", "milvus:")
    assert result.exit_code == 0, result.stderr
    want = run_cli("search", "--like", photos / "photo_0.jpg", "--index", first, "--format", "json")
    assert want.exit_code == 0, want.stderr
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()  # this process holds the file until then
    copied, moved = tmp_path / "copied", tmp_path / "moved"
    shutil.copytree(first, copied)
    first.rename(moved)
    for directory in (copied, moved):
        found = run_cli(
            "search", "--like", photos / "photo_0.jpg", "--index", directory, "--format", "json"
        )
        assert found.exit_code == 0, found.stderr
        assert found.stdout == want.stdout
        uri = run_cli("info", "--index", directory, "--json").json()["index_params"]["uri"]
        assert uri == str(directory / "vectors.milvus.db")
        server_manager_instance.release_all()
    assert not first.exists()


def test_a_lite_file_whose_folder_is_gone_is_not_blamed_on_another_process(
    tmp_path: Path,
) -> None:
    photos, vectors = tmp_path / "photos", tmp_path / "vectors"
    make_photos(photos, range(2))
    vectors.mkdir()
    directory = tmp_path / "index"
    uri = vectors / "v.db"
    result = run_cli("index", photos, "--index", directory, *TINY, "--vectors", f"milvus:{uri}")
    assert result.exit_code == 0, result.stderr
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()
    vectors.rename(tmp_path / "elsewhere")
    result = run_cli("search", "--like", photos / "photo_0.jpg", "--index", directory)
    line = _one_error_line(result, f"error: cannot open the Milvus Lite file {uri}")
    assert f"{vectors} does not exist" in line and "another process" not in line


def test_the_default_lite_file_is_recorded_relative_and_old_absolute_ones_still_match(
    milvus_index,
) -> None:
    from dataclasses import replace

    from retrieval import StorageOptions
    from retrieval.ops.storage import configure
    from retrieval.store.manifest import Manifest

    directory = milvus_index[0]
    manifest = Manifest.from_dict(json.loads((directory / "manifest.json").read_text()))
    assert manifest.vectors == {"kind": "milvus", "uri": "vectors.milvus.db"}
    # as indexes made before relative files recorded it: the same file, so no refusal
    absolute = {"kind": "milvus", "uri": str(directory / "vectors.milvus.db")}
    old = replace(manifest, vectors=absolute)
    assert configure(old, str(directory), StorageOptions(vectors="milvus:")) == old


def test_a_file_in_place_of_the_lite_database_is_one_line_saying_what_to_do(
    tmp_path: Path,
) -> None:
    import shutil

    from milvus_lite.server_manager import server_manager_instance

    photos = tmp_path / "photos"
    make_photos(photos, range(2))
    directory = tmp_path / "index"
    result = run_cli("index", photos, "--index", directory, *TINY, "--vectors", "milvus:")
    assert result.exit_code == 0, result.stderr
    server_manager_instance.release_all()
    lite = directory / "vectors.milvus.db"
    shutil.rmtree(lite)
    lite.write_bytes(b"garbage\n")
    for command in (("check",), ("search", "--like", photos / "photo_0.jpg")):
        result = run_cli(*command, "--index", directory)
        line = _one_error_line(result, f"error: cannot open the Milvus Lite file {lite}")
        assert "is a file, not a Milvus Lite database" in line and "another process" not in line
        assert f"`retrieval check --repair --index {directory}`" in line
    lite.unlink()
    assert run_cli("check", "--repair", "--index", directory).exit_code == 0
    assert run_cli("check", "--index", directory).exit_code == 0


def test_index_then_search_on_a_milvus_server_as_a_user_would(milvus_server, tmp_path: Path):
    photos = tmp_path / "photos"
    originals = make_photos(photos, range(4))
    directory = tmp_path / "index"
    vectors = f"milvus:{milvus_server}"
    made = run_module("index", photos, "--index", directory, *TINY, "--vectors", vectors)
    assert made.returncode == 0, made.stderr
    query = tmp_path / "query.png"
    shutil.copy(originals[1], query)
    found = run_module("search", query, "--index", directory, "--format", "json", "-k", "2")
    assert found.returncode == 0, found.stderr
    assert found.stderr == ""
    hits = json.loads(found.stdout)[0]["results"]
    assert Path(hits[0]["path"]) == originals[1] and hits[0]["score"] == pytest.approx(1, abs=1e-5)
    assert len(hits) == 2
    info = json.loads(run_module("info", "--index", directory, "--json").stdout)
    assert info["index_params"]["uri"] == milvus_server
    assert info["index_params"]["ntotal"] == 4
    assert run_module("check", "--index", directory).returncode == 0
