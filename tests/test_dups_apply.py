"""`dups --apply --move-to` and `--undo` (ops/dups_apply): moving duplicates out of the way,
journal first, the index re-pointed, and everything put back exactly.

The duplicates are byte-identical copies of drawn images (duplicates whatever the model), so
the plan is built here from the catalogue's content hashes; the groups of `retrieval dups`
go through `plan_from_report` the same way. Faults are injected below the code under test
(os.rename), never by mocking it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, make_photos, run_cli

from retrieval import (
    Index,
    Interrupted,
    MoveGroup,
    MoveMember,
    MovePlan,
    StorageError,
    UsageError,
)
from retrieval.ops import dups_apply
from retrieval.store.index_dir import IndexDir


def rows(directory: Path) -> list[tuple[int, bytes, int, int, bytes]]:
    """Every row as (id, path, size, mtime_ns, content_hash), in id order."""
    with IndexDir.open(directory) as index_dir:
        catalog = index_dir.catalog
        with catalog.read() as conn:
            out = [
                (r.id, r.path, r.size, r.mtime_ns, r.content_hash)
                for batch in catalog.metadata_rows(conn)
                for r in batch
            ]
    return out


def plan_by_hash(directory: Path, reference: Path | None = None) -> MovePlan:
    """Groups of identical files (same content hash); the shortest, then smallest path is
    kept, or every member under `reference` (kept and marked)."""
    by_hash: dict[bytes, list[tuple[int, bytes]]] = {}
    for row_id, path, _, _, digest in rows(directory):
        by_hash.setdefault(digest, []).append((row_id, path))
    ref = os.fsencode(reference) + b"/" if reference else None
    groups = []
    for members in by_hash.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda m: (len(m[1]), m[1]))
        marked = [MoveMember(i, p, bool(ref and p.startswith(ref))) for i, p in members]
        keep = [m for m in marked if m.reference] or marked[:1]
        groups.append(MoveGroup(tuple(keep), tuple(m for m in marked if m not in keep)))
    return MovePlan(tuple(groups))


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, Path, dict[Path, bytes]]:
    """photos/ with 3 originals and 5 byte-identical copies in sub-folders; indexed.
    Returns (photos, index, {path: bytes} of every file)."""
    photos = tmp_path / "photos"
    originals = make_photos(photos, [1, 2, 3])
    copies = [
        photos / "copies" / originals[0].name,
        photos / "copies" / "deeper" / originals[0].name,
        photos / "old" / originals[1].name,
        photos / "old" / "x" / originals[1].name,
        photos / "old" / originals[2].name,
    ]
    for copy in copies:
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(photos / copy.name, copy)
    directory = tmp_path / "index"
    result = run_cli("index", photos, "--index", directory, *TINY)
    assert result.exit_code == 0, result.stderr
    return photos, directory, {p: p.read_bytes() for p in [*originals, *copies]}


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(".journal")
    }


def events(journal: str) -> list[dict]:
    with open(journal, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh.read().splitlines()[1:]]


def test_apply_moves_copies_and_undo_puts_everything_back(library, tmp_path: Path) -> None:
    photos, directory, before_files = library
    before_rows = rows(directory)
    plan = plan_by_hash(directory)
    assert sorted(len(g.move) for g in plan.groups) == [1, 2, 2]
    attic = tmp_path / "attic"

    report = Index(directory).apply_dups(plan, attic)

    moved = sorted(os.fsdecode(o.destination) for o in report.moved)
    assert moved == sorted(
        str(attic / rel)
        for rel in (
            "copies/photo_1.jpg",
            "copies/deeper/photo_1.jpg",
            "old/photo_2.png",
            "old/x/photo_2.png",
            "old/photo_3.jpg",
        )
    )
    assert (report.skipped, report.failed) == ((), ())
    # Files: the copies are in the attic under their root-relative paths, bytes unchanged;
    # the keepers stayed.
    assert files_under(attic) == {
        str(Path(os.fsdecode(o.destination)).relative_to(attic)): before_files[
            Path(os.fsdecode(o.source))
        ]
        for o in report.moved
    }
    assert files_under(photos) == {"photo_1.jpg": before_files[photos / "photo_1.jpg"]} | {
        name: before_files[photos / name] for name in ("photo_2.png", "photo_3.jpg")
    }
    # The journal: the plan first, then "moving"/"moved" for each file, in order.
    header = json.loads(Path(report.journal).read_text().splitlines()[0])
    assert Path(report.journal).parent == attic
    assert (header["journal"], header["version"], header["move_to"]) == (
        "retrieval dups",
        1,
        str(attic),
    )
    assert header["index"] == str(directory)
    by_id = {r[0]: r for r in before_rows}
    for entry in header["moves"]:
        row = by_id[entry["id"]]
        assert (os.fsencode(entry["source"]), entry["size"], entry["mtime_ns"]) == row[1:4]
        assert entry["content_hash"] == row[4].hex()
    kinds = [next(iter(e)) for e in events(report.journal)]
    assert kinds == ["moving", "moved"] * 5
    # The index: the same rows (ids, sizes, mtimes, hashes), re-pointed, nothing re-embedded.
    after_rows = rows(directory)
    moved_to = {o.id: o.destination for o in report.moved}
    assert after_rows == [(i, moved_to.get(i, p), s, m, h) for i, p, s, m, h in before_rows]
    # search finds the moved files at their new paths (identical bytes: the top 3 of a
    # search by photo_1.jpg are it and its two moved copies), and --like takes a new path.
    found = run_cli(
        "search", photos / "photo_1.jpg", "--index", directory, "--format", "paths", "-k", "3"
    )
    assert found.exit_code == 0, found.stderr
    assert set(found.stdout.split()) == {
        str(photos / "photo_1.jpg"),
        str(attic / "copies" / "photo_1.jpg"),
        str(attic / "copies" / "deeper" / "photo_1.jpg"),
    }
    like = run_cli(
        "search", "--like", attic / "copies" / "photo_1.jpg", "--index", directory, "-k", "2"
    )
    assert like.exit_code == 0, like.stderr
    assert str(attic / "copies" / "deeper" / "photo_1.jpg") in like.stdout
    check = run_cli("check", "--index", directory)
    assert check.exit_code == 0 and "no longer exist" not in check.stdout, check.stdout
    # A re-scan of the root neither re-adds nor drops the moved images.
    again = run_cli("index", "--index", directory, *TINY[:-1], "--json")
    assert again.exit_code == 0, again.stderr
    assert (again.json()["added"], again.json()["removed"]) == (0, 0)

    undone = Index(directory).undo_dups(report.journal)

    assert sorted(o.id for o in undone.moved) == sorted(moved_to)
    assert (undone.skipped, undone.failed) == ((), ())
    assert {p: p.read_bytes() for p in before_files} == before_files
    assert files_under(attic) == {}
    assert rows(directory) == before_rows


def test_undo_twice_is_harmless(library, tmp_path: Path) -> None:
    _, directory, before_files = library
    before_rows = rows(directory)
    report = Index(directory).apply_dups(plan_by_hash(directory), tmp_path / "attic")
    Index(directory).undo_dups(report.journal)

    second = Index(directory).undo_dups(report.journal)

    assert (second.moved, second.failed) == ((), ())
    assert {o.reason for o in second.skipped} == {"already in its old place"}
    assert len(second.skipped) == 5
    assert rows(directory) == before_rows
    assert {p: p.read_bytes() for p in before_files} == before_files


def test_destination_exists_changed_and_gone_are_left_alone(library, tmp_path: Path) -> None:
    photos, directory, _ = library
    attic = tmp_path / "attic"
    (attic / "copies").mkdir(parents=True)
    (attic / "copies" / "photo_1.jpg").write_bytes(b"someone else's file")
    changed = photos / "old" / "x" / "photo_2.png"
    changed.write_bytes(changed.read_bytes() + b"\0")
    gone = photos / "old" / "photo_3.jpg"
    gone.unlink()
    before_rows = rows(directory)

    report = Index(directory).apply_dups(plan_by_hash(directory), attic)

    assert {os.fsdecode(o.source): o.reason for o in report.skipped} == {
        str(photos / "copies" / "photo_1.jpg"): f"{attic}/copies/photo_1.jpg already exists; "
        "nothing is ever overwritten",
        str(changed): "the file changed since it was indexed (size or mtime differ from the "
        "index); run retrieval index, then retrieval dups again",
        str(gone): "the file no longer exists; run retrieval index, then retrieval dups again",
    }
    assert sorted(os.fsdecode(o.source) for o in report.moved) == [
        str(photos / "copies" / "deeper" / "photo_1.jpg"),
        str(photos / "old" / "photo_2.png"),
    ]
    assert (attic / "copies" / "photo_1.jpg").read_bytes() == b"someone else's file"
    assert changed.exists() and report.failed == ()
    header = json.loads(Path(report.journal).read_text().splitlines()[0])
    assert {s["path"]: s["reason"] for s in header["skipped"]} == {
        os.fsdecode(o.source): o.reason for o in report.skipped
    }
    assert [r[0] for r in rows(directory)] == [r[0] for r in before_rows]


def test_reference_files_and_keepers_are_never_moved(library, tmp_path: Path) -> None:
    photos, directory, _ = library
    plan = plan_by_hash(directory, reference=photos / "old")

    report = Index(directory).apply_dups(plan, tmp_path / "attic")

    assert sorted(os.fsdecode(o.source) for o in report.moved) == sorted(
        [
            str(photos / "copies" / "photo_1.jpg"),
            str(photos / "copies" / "deeper" / "photo_1.jpg"),
            str(photos / "photo_2.png"),
            str(photos / "photo_3.jpg"),
        ]
    )
    assert all((photos / "old" / n).exists() for n in ("photo_2.png", "x/photo_2.png"))
    # A plan that (wrongly) asks to move a reference file or a keeper: both refused.
    group = plan_by_hash(directory).groups[0]
    ref = MoveMember(group.move[0].id, group.move[0].path, reference=True)
    bad = MovePlan((MoveGroup(group.keep, (ref,)), MoveGroup((), group.keep)))
    again = Index(directory).apply_dups(bad, tmp_path / "attic2")
    assert again.moved == ()
    assert [o.reason for o in again.skipped] == [
        "a reference file (under --reference): never moved",
        "a keeper of another group: never moved",
    ]


def test_a_destination_that_appears_after_planning_is_a_per_file_failure(
    library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, directory, _ = library
    attic = tmp_path / "attic"
    plan = plan_by_hash(directory)
    real_rename = os.rename
    planted = []

    def rename(src, dst, *args, **kwargs):
        if not planted:  # while the first file moves, someone creates the second's destination
            header = json.loads(next(attic.glob("*.journal")).read_text().splitlines()[0])
            second = Path(header["moves"][1]["destination"])
            second.parent.mkdir(parents=True, exist_ok=True)
            second.write_bytes(b"planted")
            planted.append(second)
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    report = Index(directory).apply_dups(plan, attic)

    assert [(o.destination, o.reason) for o in report.failed] == [
        (os.fsencode(planted[0]), f"{planted[0]} already exists; nothing is ever overwritten")
    ]
    assert planted[0].read_bytes() == b"planted"
    assert len(report.moved) == 4
    assert os.path.exists(report.failed[0].source)


def test_interrupted_half_way_then_undo_restores_the_moved_ones(
    library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, directory, before_files = library
    before_rows = rows(directory)
    real_rename = os.rename
    calls = []

    def rename(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_rename(*args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    journal = tmp_path / "moves.journal"
    with pytest.raises(Interrupted) as caught:
        Index(directory).apply_dups(plan_by_hash(directory), tmp_path / "attic", journal=journal)
    monkeypatch.setattr(os, "rename", real_rename)

    assert str(caught.value) == (
        f"interrupted after moving 2 of 5 file(s); the journal {journal} says which: "
        f"`retrieval dups --undo {journal}` puts them back"
    )
    assert [next(iter(e)) for e in events(str(journal))] == ["moving", "moved"] * 2 + ["moving"]
    assert len(caught.value.report.moved) == 2
    assert rows(directory) != before_rows

    undone = Index(directory).undo_dups(journal)

    assert len(undone.moved) == 2 and undone.failed == ()
    assert len(undone.skipped) == 3  # never moved: already in their old place
    assert rows(directory) == before_rows
    assert {p: p.read_bytes() for p in before_files} == before_files


def test_a_rename_error_fails_that_file_and_the_others_move(
    library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, directory, _ = library
    real_rename = os.rename
    calls = []

    def rename(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(*args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    report = Index(directory).apply_dups(plan_by_hash(directory), tmp_path / "attic")

    assert len(report.moved) == 4
    assert [o.reason for o in report.failed] == ["could not move it: Input/output error"]
    failed = report.failed[0]
    assert os.path.exists(failed.source) and not os.path.exists(failed.destination)
    assert [e for e in events(report.journal) if "failed" in e] == [
        {"failed": 2, "error": "could not move it: Input/output error"}
    ]


def test_across_file_systems_copies_verifies_and_undo_comes_back(
    library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXDEV from rename (another file system): copy, fsync, verify the hash, keep the
    mtime, unlink the source; undo the same way."""
    _, directory, before_files = library
    before_rows = rows(directory)
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if b".retrieval-move-" in os.fsencode(src):
            return real_rename(src, dst, *args, **kwargs)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", rename)
    report = Index(directory).apply_dups(plan_by_hash(directory), tmp_path / "attic")

    assert len(report.moved) == 5 and report.failed == ()
    for outcome, row in ((o, {r[0]: r for r in before_rows}[o.id]) for o in report.moved):
        assert not os.path.exists(outcome.source)
        info = os.stat(outcome.destination)
        assert (info.st_size, info.st_mtime_ns) == row[2:4]
    assert not [p for p in (tmp_path / "attic").rglob(".*retrieval-move*")]

    Index(directory).undo_dups(report.journal)
    assert rows(directory) == before_rows
    assert {p: p.read_bytes() for p in before_files} == before_files


def test_across_file_systems_a_copy_with_other_bytes_is_refused(
    library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same size and mtime as indexed but other bytes (rewritten in place, mtime restored):
    the verified copy differs from the catalogue's hash, so the file stays."""
    photos, directory, _ = library
    target = photos / "old" / "photo_3.jpg"
    info = os.stat(target)
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    monkeypatch.setattr(
        os, "rename", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EXDEV, "x"))
    )

    report = Index(directory).apply_dups(plan_by_hash(directory), tmp_path / "attic")

    assert [(os.fsdecode(o.source), o.reason) for o in report.failed] == [
        (str(target), "its bytes differ from the indexed ones (the copy was removed)")
    ]
    assert target.read_bytes() == bytes(data)
    assert not list((tmp_path / "attic").rglob("photo_3.jpg"))


def test_undo_leaves_a_moved_file_that_changed_and_puts_back_the_others(
    library, tmp_path: Path
) -> None:
    _, directory, _ = library
    report = Index(directory).apply_dups(plan_by_hash(directory), tmp_path / "attic")
    edited, removed = report.moved[0], report.moved[1]
    with open(edited.destination, "ab") as fh:
        fh.write(b"edited")
    os.unlink(removed.destination)

    undone = Index(directory).undo_dups(report.journal)

    assert len(undone.moved) == 3
    reasons = {o.id: o.reason for o in undone.failed}
    assert reasons == {
        edited.id: "the moved file changed (size, mtime or inode differ from what was "
        f"recorded); it was left at {os.fsdecode(edited.destination)}",
        removed.id: "the file is gone from both its old and its new place",
    }
    assert os.path.exists(edited.destination) and not os.path.exists(edited.source)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"garbage\n", "it is not JSON"),
        (b'{"journal": "something else"}\n', "its first line is not a retrieval dups plan"),
        (None, "it was changed after it was written (its checksum differs)"),
    ],
)
def test_undo_of_a_garbage_or_tampered_journal_is_one_line(
    library, tmp_path: Path, content: bytes | None, why: str
) -> None:
    _, directory, _ = library
    report = Index(directory).apply_dups(plan_by_hash(directory), tmp_path / "attic")
    journal = Path(report.journal)
    if content is None:  # send a moved file somewhere else by editing the plan
        text = journal.read_text().replace("/attic/", "/elsewhere/", 1)
        journal.write_text(text)
    else:
        journal.write_bytes(content)
    after_apply = rows(directory)

    result = run_cli("--index", directory, "check")  # the index is untouched either way
    with pytest.raises(UsageError) as caught:
        Index(directory).undo_dups(journal)

    assert str(caught.value) == (
        f"{journal} is not a usable retrieval dups journal ({why}); nothing was changed"
    )
    assert result.exit_code == 0
    assert rows(directory) == after_apply


def test_an_unwritable_journal_moves_nothing(library, tmp_path: Path) -> None:
    photos, directory, before_files = library
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before_rows = rows(directory)

    with pytest.raises(StorageError) as caught:
        Index(directory).apply_dups(
            plan_by_hash(directory), tmp_path / "attic", journal=blocker / "j.journal"
        )

    assert str(caught.value).startswith(f"could not write the dups journal {blocker}/j.journal")
    assert rows(directory) == before_rows
    assert {p: p.read_bytes() for p in before_files} == before_files


def test_an_existing_journal_is_never_overwritten(library, tmp_path: Path) -> None:
    _, directory, _ = library
    journal = tmp_path / "j.journal"
    journal.write_text("mine")
    with pytest.raises(UsageError, match="already exists; journals are never overwritten"):
        Index(directory).apply_dups(plan_by_hash(directory), tmp_path / "attic", journal=journal)
    assert journal.read_text() == "mine"


def test_move_to_inside_a_root_or_the_index_is_refused(library, tmp_path: Path) -> None:
    photos, directory, before_files = library
    plan = plan_by_hash(directory)
    with pytest.raises(UsageError) as inside_root:
        Index(directory).apply_dups(plan, photos / "attic")
    with pytest.raises(UsageError) as inside_index:
        Index(directory).apply_dups(plan, directory / "attic")

    assert str(inside_root.value) == (
        f"--move-to {photos}/attic is inside the indexed root {photos}: the next `retrieval "
        "index` would add the moved files back as new copies; choose a folder outside every "
        "indexed root"
    )
    assert str(inside_index.value) == (
        f"--move-to {directory}/attic is inside the index folder {directory}; "
        "choose a folder outside it"
    )
    assert not (photos / "attic").exists()
    assert {p: p.read_bytes() for p in before_files} == before_files


def test_links_are_never_followed(library, tmp_path: Path) -> None:
    """A member replaced by a symlink is left alone; a symlink planted in the move-to folder
    where a sub-folder should be is refused, not followed."""
    photos, directory, _ = library
    swapped = photos / "old" / "photo_3.jpg"
    swapped.unlink()
    swapped.symlink_to(photos / "photo_3.jpg")
    attic = tmp_path / "attic"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    attic.mkdir()
    (attic / "copies").symlink_to(elsewhere)

    report = Index(directory).apply_dups(plan_by_hash(directory), attic)

    reasons = {os.fsdecode(o.source): o.reason for o in [*report.skipped, *report.failed]}
    assert reasons[str(swapped)] == (
        "the file is a symlink now, not a regular file; run retrieval index, then "
        "retrieval dups again"
    )
    for name in ("copies/photo_1.jpg", "copies/deeper/photo_1.jpg"):
        assert reasons[str(photos / name)] == (
            f"{attic}/copies is a symlink, not a folder; nothing was moved"
        )
    assert list(elsewhere.iterdir()) == []
    assert len(report.moved) == 2


def test_killed_after_a_move_then_undo_restores(library, tmp_path: Path) -> None:
    """SIGKILL right after the 2nd file moved, before its row was re-pointed: the journal
    says 2 started, 1 finished, and undo puts both files and rows back."""
    photos, directory, before_files = library
    before_rows = rows(directory)
    journal = tmp_path / "k.journal"
    script = (
        "import sys; from test_dups_apply import plan_by_hash; from retrieval import Index;"
        "from pathlib import Path; d = Path(sys.argv[1]);"
        "Index(d).apply_dups(plan_by_hash(d), sys.argv[2], journal=sys.argv[3])"
    )
    env = {
        **os.environ,
        "RETRIEVAL_TEST_KILL_AT": "dups-moved:2",
        # the tests folder for test_dups_apply; the package comes from the install (or from
        # a PYTHONPATH the caller set)
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, str(directory), str(tmp_path / "attic"), str(journal)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [next(iter(e)) for e in events(str(journal))] == ["moving", "moved", "moving"]

    undone = Index(directory).undo_dups(journal)

    assert (len(undone.moved), undone.failed) == (2, ())
    assert rows(directory) == before_rows
    assert {p: p.read_bytes() for p in before_files} == before_files


def test_plan_from_report_keeps_keepers_and_references() -> None:
    from types import SimpleNamespace as NS

    member = lambda i, keep, ref: NS(id=i, path=b"/p/%d" % i, is_keeper=keep, is_reference=ref)  # noqa: E731
    report = NS(groups=(NS(members=(member(1, True, True), member(2, False, False))),))

    plan = dups_apply.plan_from_report(report)

    assert plan == MovePlan(
        (MoveGroup((MoveMember(1, b"/p/1", True),), (MoveMember(2, b"/p/2", False),)),)
    )


def test_a_journal_of_another_index_is_refused(library, tmp_path: Path) -> None:
    photos, directory, _ = library
    report = Index(directory).apply_dups(plan_by_hash(directory), tmp_path / "attic")
    other = tmp_path / "other-index"
    assert run_cli("index", photos, "--index", other, *TINY).exit_code == 0

    with pytest.raises(UsageError) as caught:
        Index(other).undo_dups(report.journal)

    assert str(caught.value) == (
        f"the journal {report.journal} was written for the index {directory}, not {other}; "
        f"run the undo with --index {directory}"
    )


def test_a_second_apply_leaves_what_the_first_moved(library, tmp_path: Path) -> None:
    """The moved rows stay in the index (re-pointed), so the same groups come back; their
    members already in the move-to folder are left there."""
    _, directory, _ = library
    attic = tmp_path / "attic"
    first = Index(directory).apply_dups(plan_by_hash(directory), attic)

    second = Index(directory).apply_dups(plan_by_hash(directory), attic)

    assert second.moved == ()
    assert sorted(o.source for o in second.skipped) == sorted(o.destination for o in first.moved)
    assert {o.reason for o in second.skipped} == {"already in the --move-to folder"}


def test_non_utf8_names_round_trip(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (original,) = make_photos(photos, [7])
    odd = os.path.join(os.fsencode(photos), b"caf\xe9", b"\x1b[31m.jpg")
    os.makedirs(os.path.dirname(odd))
    shutil.copy2(original, odd)
    directory = tmp_path / "index"
    assert run_cli("index", photos, "--index", directory, *TINY).exit_code == 0
    before = rows(directory)
    ids = {r[1]: r[0] for r in before}
    keep = MoveMember(ids[os.fsencode(original)], os.fsencode(original))
    plan = MovePlan((MoveGroup((keep,), (MoveMember(ids[odd], odd),)),))

    report = Index(directory).apply_dups(plan, tmp_path / "attic")

    moved = os.path.join(os.fsencode(tmp_path / "attic"), b"caf\xe9", b"\x1b[31m.jpg")
    assert [o.destination for o in report.moved] == [moved]
    assert open(moved, "rb").read() == original.read_bytes()
    assert "  " + str(original.parent) + "/caf\\xe9/\\x1b[31m.jpg -> " in "\n".join(report.lines())
    Index(directory).undo_dups(report.journal)
    assert rows(directory) == before


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def dups_cli(monkeypatch: pytest.MonkeyPatch):
    """`retrieval dups-by-hash`: the options of cli/dups_apply wired as `cli/dups.py` wires
    them, over the content-hash groups (the real `dups` report is d1-dups's)."""
    import click

    from retrieval.cli import cli
    from retrieval.cli.common import index_option
    from retrieval.cli.dups_apply import apply_options, check_apply_options, run_apply, run_undo

    @click.command("dups-by-hash")
    @index_option
    @click.option("--json", "as_json", is_flag=True)
    @apply_options
    def command(index_dir, as_json, apply, move_to, journal, undo, wait):
        check_apply_options(apply, move_to, journal, undo)
        if undo:
            run_undo(index_dir, undo, wait, as_json, quiet=False)
            return
        if apply:
            index = Index(index_dir)
            run_apply(index, report_by_hash(index.directory), move_to, journal, wait, as_json)

    monkeypatch.setitem(cli.commands, "dups-by-hash", command)
    return "dups-by-hash"


def report_by_hash(directory: str):
    """The content-hash plan in the shape of `DupsReport` (groups of members with is_keeper,
    is_reference), which is what `run_apply` receives."""
    from types import SimpleNamespace as NS

    groups = []
    for group in plan_by_hash(Path(directory)).groups:
        kept = [NS(id=m.id, path=m.path, is_keeper=True, is_reference=False) for m in group.keep]
        rest = [NS(id=m.id, path=m.path, is_keeper=False, is_reference=False) for m in group.move]
        groups.append(NS(members=tuple(kept + rest)))
    return NS(groups=tuple(groups))


def test_cli_apply_needs_move_to_and_move_to_needs_apply(library, dups_cli) -> None:
    _, directory, before_files = library
    alone = run_cli(dups_cli, "--index", directory, "--apply")
    stray = run_cli(dups_cli, "--index", directory, "--move-to", "/tmp/x")

    assert alone.exit_code == 2
    assert alone.stderr.splitlines()[-1] == (
        "Error: --apply needs --move-to DIR: images are moved aside, never deleted"
    )
    assert stray.exit_code == 2
    assert stray.stderr.splitlines()[-1] == (
        "Error: --move-to and --journal act only with --apply; add --apply to move the images "
        "(nothing was changed)"
    )
    both = run_cli(dups_cli, "--index", directory, "--undo", "j", "--apply", "--move-to", "x")
    assert both.exit_code == 2
    assert both.stderr.splitlines()[-1] == (
        "Error: --undo JOURNAL takes no --apply, --move-to or --journal: it puts back what that "
        "journal's --apply moved"
    )
    assert {p: p.read_bytes() for p in before_files} == before_files


def test_cli_apply_json_then_undo_text(library, dups_cli, tmp_path: Path) -> None:
    _, directory, before_files = library
    before_rows = rows(directory)
    attic = tmp_path / "attic"
    journal = tmp_path / "j.journal"

    applied = run_cli(
        dups_cli,
        "--index",
        directory,
        "--apply",
        "--move-to",
        attic,
        "--journal",
        journal,
        "--json",
    )
    assert applied.exit_code == 0, applied.stderr
    out = applied.json()
    assert (out["action"], out["journal"], len(out["moved"]), out["failed"]) == (
        "apply",
        str(journal),
        5,
        [],
    )

    undone = run_cli(dups_cli, "--index", directory, "--undo", journal)
    assert undone.exit_code == 0, undone.stderr
    assert undone.stdout.splitlines()[0] == "moved back 5 file(s)"
    assert rows(directory) == before_rows
    assert {p: p.read_bytes() for p in before_files} == before_files


def test_cli_undo_of_garbage_is_one_error_line_and_failures_exit_1(
    library, dups_cli, tmp_path: Path
) -> None:
    _, directory, _ = library
    garbage = tmp_path / "garbage.journal"
    garbage.write_bytes(b"\x00\x01 not json")
    result = run_cli(dups_cli, "--index", directory, "--undo", garbage)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: {garbage} is not a usable retrieval dups journal (it is not JSON); "
        "nothing was changed\n"
    )

    report = Index(directory).apply_dups(plan_by_hash(directory), tmp_path / "attic")
    os.unlink(report.moved[0].destination)
    partial = run_cli(dups_cli, "--index", directory, "--undo", report.journal)
    assert partial.exit_code == 1
    assert partial.stdout.splitlines()[:1] == ["moved back 4 file(s)"]
    assert "failed: 1 file(s)" in partial.stdout
    assert partial.stderr == (
        "error: 1 file(s) could not be put back (listed above with the reason); the others were\n"
    )


def test_a_move_to_holding_a_root_is_refused_and_none_lands_in_the_index(
    library, tmp_path: Path
) -> None:
    """--move-to above the root is refused; above the index folder it is allowed, but a
    member whose relative path would put it inside the index folder is left alone."""
    photos, _, _ = library
    with pytest.raises(UsageError) as caught:
        Index(tmp_path / "index").apply_dups(plan_by_hash(tmp_path / "index"), tmp_path)
    assert str(caught.value) == (
        f"--move-to {tmp_path} holds the indexed root {photos}: moved files would mix with the "
        "indexed ones; choose a folder outside every indexed root"
    )
    (photos / "index").mkdir()
    shutil.copy2(photos / "photo_1.jpg", photos / "index" / "photo_1.jpg")
    store = tmp_path / "store"
    directory = store / "index"
    assert run_cli("index", photos, "--index", directory, *TINY).exit_code == 0

    report = Index(directory).apply_dups(plan_by_hash(directory), store)

    assert {os.fsdecode(o.source): o.reason for o in report.skipped} == {
        str(photos / "index/photo_1.jpg"): f"{directory}/photo_1.jpg would lie inside the "
        f"index folder {directory}",
    }
    assert len(report.moved) == 5


def test_a_catalogue_failure_stops_the_run_and_undo_puts_back(
    library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 2nd re-pointing fails (disk full, say): the run stops with the journal named,
    the 2nd file is moved but its row is not; undo puts both back."""
    from retrieval.store.catalog import Catalog

    _, directory, before_files = library
    before_rows = rows(directory)
    real_repoint = Catalog.repoint
    calls = []

    def repoint(self, moves):
        calls.append(moves)
        if len(calls) == 2:
            raise StorageError("could not write the catalogue: database or disk is full")
        return real_repoint(self, moves)

    monkeypatch.setattr(Catalog, "repoint", repoint)
    journal = tmp_path / "j.journal"
    with pytest.raises(StorageError) as caught:
        Index(directory).apply_dups(plan_by_hash(directory), tmp_path / "attic", journal=journal)
    monkeypatch.setattr(Catalog, "repoint", real_repoint)

    assert str(caught.value) == (
        "could not write the catalogue: database or disk is full; the journal "
        f"{journal} says what moved: `retrieval dups --undo {journal}` puts it back"
    )
    undone = Index(directory).undo_dups(journal)
    assert (len(undone.moved), undone.failed) == (2, ())
    assert rows(directory) == before_rows
    assert {p: p.read_bytes() for p in before_files} == before_files
