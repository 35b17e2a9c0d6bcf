"""Index folders with characters that mean something in URIs (issue 11.6).

The catalogue used to be opened through an "sqlite:///PATH" URL: `--index '/x/idxq?mode=ro'`
wrote the catalogue to the file `/x/idxq`, shared by every index whose name starts so. Each
index here must keep its own catalogue inside its own folder, whatever its name.
"""

from __future__ import annotations

import os
from pathlib import Path

import _procs as P
import pytest
from _procs import one_cpu  # noqa: F401 - autouse fixture
from conftest import run_cli

from retrieval.store.catalog import catalog_uri

NAMES = [
    "idxq?mode=ro",
    "idx%20pct",
    "idx%",
    "idx#frag",
    "idx with spaces",
    "idx-ünïcødé-写真",
    "idx?other&cache=shared",
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("paths") / "photos"
    P.make_images(folder, 3)
    return folder


@pytest.mark.parametrize("name", NAMES)
def test_odd_index_name_keeps_its_catalogue_inside(photos: Path, tmp_path: Path, name: str):
    index = tmp_path / name
    result = run_cli("index", photos, "--index", index, *P.FAST, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == 3
    assert sorted(os.listdir(tmp_path)) == [name]  # nothing written beside the folder
    assert (index / "catalog.sqlite").is_file()
    assert len(P.rows(index)) == 3
    found = run_cli("search", photos / "img_0001.png", "--index", index, "--format", "json")
    assert found.exit_code == 0, found.stderr
    assert len(found.json()[0]["results"]) == 3


def test_two_indexes_differing_after_a_question_mark_are_separate(photos: Path, tmp_path: Path):
    first, second = tmp_path / "idxq?mode=ro", tmp_path / "idxq?other"
    assert run_cli("index", photos, "--index", first, *P.FAST).exit_code == 0
    result = run_cli("index", photos, "--index", second, *P.FAST, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == 3  # not "unchanged": a catalogue of its own
    assert sorted(os.listdir(tmp_path)) == sorted([first.name, second.name])


def test_uri_quotes_every_special_character():
    uri = catalog_uri("/a b/q?x=1#f%2/ü/catalog.sqlite", "rw")
    assert uri == "file:/a%20b/q%3Fx%3D1%23f%252/%C3%BC/catalog.sqlite?mode=rw"


def test_non_utf8_index_name(photos: Path, tmp_path: Path):
    index = os.path.join(os.fsencode(tmp_path), b"idx-\xff\xfe")
    result = run_cli("index", photos, "--index", os.fsdecode(index), *P.FAST, "--json")
    assert result.exit_code == 0, result.stderr
    assert os.path.isfile(os.path.join(index, b"catalog.sqlite"))
