"""Finding the index when none is named (`retrieval.locate`): --index, $RETRIEVAL_INDEX, the
nearest indexes/default walking up from the working directory, the project layout for a new
index, the per-user default; and `info` saying which."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import TINY, make_photos, run_cli

from retrieval import locate
from retrieval.locate import BY_ENV, BY_OPTION, BY_PROJECT, BY_USER, Location


def make_index_dir(folder: Path) -> Path:
    """An `indexes/default` under `folder` that holds a catalogue (all the walk looks for)."""
    directory = folder / "indexes" / "default"
    directory.mkdir(parents=True)
    (directory / "catalog.sqlite").write_bytes(b"")
    return directory


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake HOME and XDG data folder; skips if a folder above tmp holds an index."""
    if locate.walk_up(str(tmp_path)) is not None:
        pytest.skip("a folder above the temporary folder holds indexes/default")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.delenv("RETRIEVAL_INDEX", raising=False)
    return home


def test_named_and_env_win(tmp_path: Path, home: Path) -> None:
    make_index_dir(tmp_path)
    env = {"RETRIEVAL_INDEX": "from-env", "XDG_DATA_HOME": str(home / "data")}
    assert locate.locate("mine", cwd=str(tmp_path), environ=env) == Location(
        str(tmp_path / "mine"), BY_OPTION
    )
    assert locate.locate(None, cwd=str(tmp_path), environ=env) == Location(
        str(tmp_path / "from-env"), BY_ENV
    )
    assert locate.locate(None, cwd=str(tmp_path), environ={**env, "RETRIEVAL_INDEX": ""}) == (
        Location(str(tmp_path / "indexes" / "default"), f"found by walking up from {tmp_path}")
    )


def test_walking_up_finds_the_nearest_index_with_a_catalogue(tmp_path: Path, home: Path) -> None:
    outer = make_index_dir(tmp_path / "project")
    deep = tmp_path / "project" / "src" / "a" / "b"
    deep.mkdir(parents=True)
    (tmp_path / "project" / "src" / "indexes" / "default").mkdir(parents=True)  # no catalogue
    found = locate.locate(cwd=str(deep))
    assert found == Location(str(outer), f"found by walking up from {deep}")
    inner = make_index_dir(tmp_path / "project" / "src" / "a")
    assert locate.locate(cwd=str(deep)).directory == str(inner)
    assert locate.locate(cwd=str(deep), creating=True).directory == str(inner)


def test_nothing_found_reads_the_per_user_default(tmp_path: Path, home: Path) -> None:
    (tmp_path / "work" / "indexes").mkdir(parents=True)
    user = str(home / "data" / "retrieval" / "indexes" / "default")
    assert locate.locate(cwd=str(tmp_path / "work")) == Location(user, BY_USER)
    # a new index goes to ./indexes/default where the working directory has indexes/ ...
    assert locate.locate(cwd=str(tmp_path / "work"), creating=True) == Location(
        str(tmp_path / "work" / "indexes" / "default"), BY_PROJECT
    )
    # ... else to the per-user default
    assert locate.locate(cwd=str(tmp_path), creating=True) == Location(user, BY_USER)


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"XDG_DATA_HOME": "/xdg", "HOME": "/h"}, "/xdg"),
        ("linux", {"HOME": "/h"}, "/h/.local/share"),
        ("linux", {"XDG_DATA_HOME": "", "HOME": "/h"}, "/h/.local/share"),
        ("linux", {"XDG_DATA_HOME": "relative", "HOME": "/h"}, "/h/.local/share"),  # XDG spec
        ("freebsd14", {"HOME": "/h"}, "/h/.local/share"),
        ("darwin", {"XDG_DATA_HOME": "/xdg", "HOME": "/h"}, "/h/Library/Application Support"),
        ("win32", {"LOCALAPPDATA": "/w/Local", "HOME": "/h"}, "/w/Local"),
        ("win32", {"USERPROFILE": "/u", "HOME": "/h"}, "/u/AppData/Local"),
    ],
)
def test_per_user_data_folder(platform: str, env: dict[str, str], expected: str) -> None:
    assert locate.user_data_dir(env, platform) == expected
    assert locate.user_index_dir(env, platform) == os.path.join(
        expected, "retrieval", "indexes", "default"
    )


# -- end to end ---------------------------------------------------------------------------------


def test_an_index_made_in_a_project_is_found_from_its_subfolders(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "indexes").mkdir(parents=True)
    (photo,) = make_photos(project / "photos", [1])
    monkeypatch.chdir(project)
    loud = [a for a in TINY if a != "--quiet"]
    result = run_cli("index", "photos", *loud)
    assert result.exit_code == 0, result.stderr
    directory = project / "indexes" / "default"
    assert f"retrieval: creating a new index at {directory} ({BY_PROJECT})" in result.stderr
    assert (directory / "catalog.sqlite").is_file()

    sub = project / "photos"
    monkeypatch.chdir(sub)
    found = run_cli("search", photo.name, "-k", "1", "--format", "paths")
    assert (found.exit_code, found.stdout) == (0, f"{photo}\n")
    info = run_cli("info", "--json").json()
    assert (info["index"], info["located_by"]) == (
        str(directory),
        f"found by walking up from {sub}",
    )
    text = [line.strip().split(": ", 1) for line in run_cli("info").stdout.splitlines()]
    walked = f"found by walking up from {sub}"
    assert text[:2] == [["index", str(directory)], ["located_by", walked]]
    # and a re-run from a subfolder updates that index, not a new one
    again = run_cli("index", ".", *TINY, "--json")
    assert again.json()["unchanged"] == 1
    assert not (sub / "indexes").exists()


def test_an_index_made_elsewhere_goes_to_the_per_user_default(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (photo,) = make_photos(tmp_path / "pictures", [2])
    monkeypatch.chdir(tmp_path / "pictures")
    result = run_cli("index", ".", *TINY)
    assert result.exit_code == 0, result.stderr
    user = home / "data" / "retrieval" / "indexes" / "default"
    assert (user / "catalog.sqlite").is_file()
    assert not (tmp_path / "pictures" / "indexes").exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    found = run_cli("search", photo, "-k", "1", "--format", "paths")
    assert (found.exit_code, found.stdout) == (0, f"{photo}\n")
    info = run_cli("info", "--json").json()
    assert (info["index"], info["located_by"]) == (str(user), BY_USER)
    by_env = run_cli("info", "--json", env={"RETRIEVAL_INDEX": str(user)}).json()
    assert by_env["located_by"] == BY_ENV
    assert run_cli("info", "--json", "--index", user).json()["located_by"] == BY_OPTION


def test_no_index_anywhere_says_where_it_looked(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = run_cli("info")
    user = home / "data" / "retrieval" / "indexes" / "default"
    assert (result.exit_code, result.stdout) == (1, "")
    assert (result.exit_code, result.stderr) == (
        1,
        f"error: no index found: no indexes/default in {work} or a folder above it, and "
        f"none at the per-user default {user}; build one with `retrieval index FOLDER` (from "
        "your project folder, or anywhere for the per-user one), or name it with --index DIR "
        "or $RETRIEVAL_INDEX\n",
    )
