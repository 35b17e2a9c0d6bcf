"""Hand-made mutation testing: does a realistic one-line bug in the important logic fail a test?

Not a test module (pytest collects only test_*.py). Run it from the repository root:

    python tests/mutation.py                 # every mutation, serially
    python tests/mutation.py --list          # where each mutation applies (found / not found)
    python tests/mutation.py -k indexing -k prune -j 2 --timeout 120

Each mutation is (file, exact original line, mutated line, test files to run, what it breaks).
The script copies the repository to a temporary folder once per job (the working tree is
never edited: other work may be going on in it), replaces the one line in the copy, runs
`python -m pytest -x -q -p no:cacheprovider TESTS` there with a timeout, and restores the
line. A failing run (or a timeout) kills the mutation; a passing run means it survived: a
bug no listed test notices.

Lines are matched by their exact text (stripped of indentation), never by line number, so the
list survives refactoring: a line that moved to another file of the package is still found
(reported as "moved"); one that no longer exists, or exists more than once, is "not found" and
left out of the score. Update the list when code changes, and add a mutation when you write
logic that matters. The unmutated tests are run first (once per test selection): a mutation
whose tests already fail is reported as "baseline fails" and not scored.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "retrieval"


@dataclass(frozen=True)
class Mutation:
    file: str  # where the line is expected, relative to the repository root
    original: str  # the exact line, indentation aside
    mutated: str  # what it becomes (same indentation)
    tests: tuple[str, ...]  # test files or node ids to run
    breaks: str  # the bug, in words


INDEXING = "retrieval/ops/indexing.py"
SEARCHING = "retrieval/ops/searching.py"
CATALOG = "retrieval/store/catalog.py"
QUERIES = "retrieval/store/catalog_queries.py"
INC, ROOTS = "tests/test_incremental.py", "tests/test_roots.py"
SEARCH_TESTS = ("tests/test_searching.py", "tests/test_filters.py")

MUTATIONS = [
    # -- indexing plan: unchanged / changed / moved / removed --------------------------------
    Mutation(
        INDEXING,
        'if row and row.status == "ok" and (row.size, row.mtime_ns) == '
        "(entry.size, entry.mtime_ns):",
        'if row and row.status == "ok" and row.size == entry.size:',
        (ROOTS, INC),
        "skip-unchanged compares size only (ignores mtime)",
    ),
    Mutation(
        INDEXING,
        'if row and row.status == "ok" and (row.size, row.mtime_ns) == '
        "(entry.size, entry.mtime_ns):",
        "if row and (row.size, row.mtime_ns) == (entry.size, entry.mtime_ns):",
        (INC, ROOTS),
        "a failed file with the same stat is never retried",
    ),
    Mutation(
        INDEXING,
        "if st.st_size == row.size and hash_bytes(data) == row.content_hash:",
        "if st.st_size == row.size:",
        (ROOTS, INC),
        "a same-size rewrite is taken for a touch (new content not re-embedded)",
    ),
    Mutation(
        INDEXING,
        "rows = gone.get((st.st_size, hash_bytes(data)))",
        "rows = next((v for (s, _), v in gone.items() if s == st.st_size and v), None)",
        (ROOTS, INC),
        "move detection matches on size instead of content hash",
    ),
    Mutation(
        INDEXING,
        'if row.status == "ok" and row.content_hash and vanished(row.path):',
        'if row.status == "ok" and row.content_hash:',
        (ROOTS, INC),
        "a row whose file still exists (excluded) is moved to its copy",
    ),
    Mutation(
        INDEXING,
        "and not any(r.path.startswith(d) for d in blind)",
        "and True",
        ("tests/test_odd_files.py::test_unreadable_folder_is_listed_and_its_rows_are_kept",),
        "rows under an unreadable folder are removed",
    ),
    Mutation(
        INDEXING,
        "missing=[r for r in missing if r.id not in moved_ids],",
        "missing=missing,",
        (INC, ROOTS),
        "a moved row is also removed",
    ),
    Mutation(
        INDEXING,
        "if vanished(row.path):",
        "if True:",
        (ROOTS, INC),
        "a new file equal to a row in another root that still exists is a move, not a copy",
    ),
    Mutation(
        INDEXING,
        "if row.id in taken or row.path in known or row.size != result.size:",
        "if row.path in known or row.size != result.size:",
        (ROOTS, INC),
        "two copies of one vanished file both take its row",
    ),
    Mutation(
        INDEXING,
        'elif r.path in known and known[r.path].status == "ok":',
        "elif r.path in known:",
        (INC, ROOTS),
        "a fixed failure counts as updated, not added",
    ),
    # -- searching: filters, k, like queries ---------------------------------------------------
    Mutation(SEARCHING, "hits = hits[:k]", "hits = hits[: k + 1]", SEARCH_TESTS, "k + 1 results"),
    Mutation(
        SEARCHING,
        "hits = [h for h in hits if h.score >= min_score]",
        "hits = [h for h in hits if h.score > min_score]",
        SEARCH_TESTS,
        "min_score excludes a hit scoring exactly min_score",
    ),
    Mutation(
        SEARCHING,
        "extra = 1 if own_ids is not None else 0",
        "extra = 0",
        SEARCH_TESTS,
        "a like query returns k - 1 results (its own hit taken from k)",
    ),
    Mutation(
        SEARCHING,
        "k = min(k, len(allow))",
        "k = max(k, len(allow))",
        SEARCH_TESTS,
        "a filter raises k to the allowed count",
    ),
    Mutation(
        SEARCHING,
        "if k > COUNT_ABOVE_K:",
        "if k < COUNT_ABOVE_K:",
        SEARCH_TESTS,
        "a huge k is passed to FAISS uncapped",
    ),
    Mutation(
        SEARCHING,
        "if filters is None or filters.empty:",
        "if filters is None:",
        SEARCH_TESTS,
        "an empty filter becomes an id set (slower search, same results)",
    ),
    Mutation(
        SEARCHING,
        "if k < 1:",
        "if k < 0:",
        SEARCH_TESTS,
        "-k 0 accepted",
    ),
    Mutation(
        SEARCHING,
        "if min_score is not None and not -1.0 <= min_score <= 1.0:  # NaN fails too",
        "if min_score is not None and (min_score < -1.0 or min_score > 1.0):",
        SEARCH_TESTS,
        "a NaN min_score is accepted",
    ),
    # -- catalogue: filters, prefix ranges, upserts, removals, generation ------------------------
    Mutation(
        QUERIES,
        "conds.append(column >= low)",
        "conds.append(column > low)",
        SEARCH_TESTS,
        "--min-width/--min-height exclude the bound",
    ),
    Mutation(
        QUERIES,
        "conds.append(images.c.size <= max_size)",
        "conds.append(images.c.size < max_size)",
        SEARCH_TESTS,
        "--max-size excludes the bound",
    ),
    Mutation(
        QUERIES,
        "conds.append(images.c.mtime_ns < mtime_before_ns)",
        "conds.append(images.c.mtime_ns <= mtime_before_ns)",
        SEARCH_TESTS,
        "--modified-before includes the bound",
    ),
    Mutation(
        "retrieval/pathnames.py",
        'low = directory.rstrip(b"/") + b"/"',
        'low = directory.rstrip(b"/")',
        (ROOTS, "tests/test_searching.py"),
        "folder prefix /a/b also matches /a/bc",
    ),
    Mutation(
        QUERIES,
        "cond = or_(images.c.path == root, and_(images.c.path >= low, images.c.path < high))",
        "cond = and_(images.c.path >= low, images.c.path < high)",
        ("tests/test_prune.py",),
        "prune --root FILE misses the file's own row",
    ),
    Mutation(
        CATALOG,
        '"ok" if ok else "failed",',
        '"ok",',
        (INC, "tests/test_catalog_vectors.py"),
        "a failed file is stored as ok",
    ),
    Mutation(
        CATALOG,
        "stored.update(row[0] for row in found)",
        "pass",
        ("tests/test_catalog_writes.py", "tests/test_catalog_vectors.py"),
        "a row stored by another run is inserted twice",
    ),
    Mutation(
        CATALOG,
        'conn.execute(insert(removals), [{"id": i, "gen": gen} for i in chunk])',
        "pass",
        ("tests/test_catalog_writes.py", "tests/test_catalog_vectors.py"),
        "removals are not logged: readers keep finding deleted rows",
    ),
    Mutation(
        CATALOG,
        'gen = get_int(conn, "generation", 0) + 1',
        'gen = get_int(conn, "generation", 0)',
        ("tests/test_catalog_vectors.py", INC),
        "a write does not bump the generation: the cache looks current",
    ),
    # -- manifest compatibility, import checks, lock ---------------------------------------------
    Mutation(
        "retrieval/store/manifest.py",
        'or (weights.source == "untrained" and weights.identity == built.weights.identity)',
        'or weights.source == "untrained"',
        ("tests/test_compatibility.py",),
        "an index of seed 0 accepts untrained seed 1 vectors",
    ),
    Mutation(
        "retrieval/store/manifest.py",
        'or (weights.source == "file" and weights.path == built.weights.path)',
        'or weights.source == "file"',
        ("tests/test_compatibility.py",),
        "an index built from one weights file accepts another",
    ),
    Mutation(
        "retrieval/store/manifest.py",
        "if version != SCHEMA_VERSION:",
        "if version > SCHEMA_VERSION:",
        ("tests/test_compatibility.py", "tests/test_schema_guard.py"),
        "an older schema version is read as current",
    ),
    Mutation(
        "retrieval/ops/importing.py",
        "and mine.weights.identity == theirs.weights.identity",
        "and True",
        ("tests/test_import.py",),
        "import accepts vectors from the same model and dim with other weights",
    ),
    Mutation(
        "retrieval/ops/importing.py",
        "mine.name == theirs.name",
        "True",
        ("tests/test_import.py",),
        "import accepts another model's vectors",
    ),
    Mutation(
        "retrieval/ops/import_checks.py",
        'if not path.startswith(b"/"):',
        'if not path.startswith(b"/") and False:',
        ("tests/test_import_validation.py",),
        "import accepts relative paths",
    ),
    Mutation(
        "retrieval/store/files.py",
        "fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))",
        "fcntl.flock(fd, fcntl.LOCK_SH | (0 if wait else fcntl.LOCK_NB))",
        ("tests/test_writer_lock.py", "tests/test_lockfile.py"),
        "two writers share the writer lock",
    ),
    Mutation(
        "retrieval/store/files.py",
        'if kind == "file" and info.st_nlink > 1:',
        'if kind == "file" and info.st_nlink > 2:',
        ("tests/test_lockfile.py", "tests/test_open_safety.py"),
        "a lock file hard-linked to another file is accepted",
    ),
    # -- pruning -----------------------------------------------------------------------------
    Mutation(
        "retrieval/ops/pruning.py",
        "forgotten = [r for r in remembered if vanished(r)]",
        "forgotten = list(remembered)",
        ("tests/test_prune.py",),
        "prune forgets remembered roots that are still on disk",
    ),
    Mutation(
        "retrieval/ops/pruning.py",
        "if not under and root not in remembered:",
        "if not under:",
        ("tests/test_prune.py",),
        "forgetting a remembered root with no rows is refused",
    ),
    Mutation(
        "retrieval/ops/pruning.py",
        "return [(i, p) for batch in catalog.iter_paths() for i, p in batch if vanished(p)]",
        "return [(i, p) for batch in catalog.iter_paths() for i, p in batch[1:] if vanished(p)]",
        ("tests/test_prune.py",),
        "prune misses the first row of each batch",
    ),
    # -- ANN recall ----------------------------------------------------------------------------
    Mutation(
        "retrieval/ops/ann.py",
        "good = (mine >= 0) & (score >= kth - TIE_EPSILON)",
        "good = mine >= 0",
        ("tests/test_ann.py",),
        "recall counts any returned id as found",
    ),
    Mutation(
        "retrieval/ops/ann.py",
        "keep = (ids != own) & (ids >= 0)",
        "keep = ids >= 0",
        ("tests/test_ann.py",),
        "recall keeps each query's own id in the truth",
    ),
    Mutation(
        "retrieval/ops/ann.py",
        "if recall >= target:",
        "if recall >= target - 0.05:",
        ("tests/test_ann.py",),
        "tuning stops below the target recall",
    ),
    # -- path names and the exclude rule -------------------------------------------------------
    Mutation(
        "retrieval/pathnames.py",
        "return os.fsencode(os.path.abspath(os.fsdecode(path)))",
        "return os.fsencode(os.fsdecode(path))",
        ("tests/test_searching.py", "tests/test_index_paths.py"),
        "relative names are stored and shown relative",
    ),
    Mutation(
        "retrieval/pathnames.py",
        "[*range(0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028, 0x2029]",
        "[*range(0x20), 0x7F, 0x061C, 0x200E, 0x200F, 0x2028, 0x2029]",
        ("tests/test_output.py",),
        "C1 control characters reach the terminal",
    ),
    Mutation(
        "retrieval/sources/scan.py",
        "if rule.folders_only and not is_dir:",
        "if rule.folders_only and is_dir:",
        ("tests/test_exclude.py",),
        "`cache/` excludes files, not folders",
    ),
    Mutation(
        "retrieval/sources/scan.py",
        "subject = os.path.basename(path)",
        "subject = path",
        ("tests/test_exclude.py",),
        "a pattern without / is matched on the whole path, not the name",
    ),
    Mutation(
        "retrieval/sources/scan.py",
        'relative = path[len(root.rstrip(b"/")) + 1 :]',
        'relative = path[len(root.rstrip(b"/")) :]',
        ("tests/test_exclude.py",),
        "relative patterns are matched with a leading /",
    ),
    Mutation(
        "retrieval/sources/scan.py",
        'body = "*" + body  # any depth, as `**/`',
        "body = body",
        ("tests/test_exclude.py",),
        "`*/thumbs/*` matches one level only",
    ),
    Mutation(
        "retrieval/sources/scan.py",
        'out.append(b"[^/]*")',
        'out.append(b".*")',
        ("tests/test_exclude.py",),
        "`*` crosses folders",
    ),
]


@dataclass
class Located:
    mutation: Mutation
    file: str | None  # where the line was found (None: not found)
    note: str  # "", "moved", "not found", "not unique"


def locate(mutation: Mutation, root: Path) -> Located:
    """Find the mutation's line: in its file, else once anywhere in the package."""
    wanted = mutation.original.strip()

    def count(path: Path) -> int:
        return sum(line.strip() == wanted for line in path.read_text().splitlines())

    home = root / mutation.file
    here = count(home) if home.exists() else 0
    if here == 1:
        return Located(mutation, mutation.file, "")
    if here > 1:
        return Located(mutation, None, "not unique")
    hits = [p for p in sorted((root / PACKAGE).rglob("*.py")) if count(p)]
    if len(hits) == 1 and count(hits[0]) == 1:
        return Located(mutation, str(hits[0].relative_to(root)), "moved")
    return Located(mutation, None, "not unique" if hits else "not found")


def apply(path: Path, original: str, mutated: str) -> str:
    """Replace the one line equal to `original` (indentation aside); returns the old text."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() == original.strip():
            indent = line[: len(line) - len(line.lstrip())]
            lines[i] = indent + mutated.strip() + "\n"
            break
    path.write_text("".join(lines))
    return text


def copy_repo(into: Path) -> Path:
    """A copy of the repository without git data, caches or the virtual environment."""
    skip = shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "*.egg-info", "build"
    )
    copy = into / "repo"
    shutil.copytree(ROOT, copy, ignore=skip, symlinks=True)
    return copy


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float]:
    """('passed' | 'failed' | 'timeout', seconds) of pytest on `tests` inside `copy`."""
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=copy,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        code = proc.wait(timeout)
        outcome = "passed" if code == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the run and anything it started
        proc.wait()
        outcome = "timeout"
    return outcome, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress as it goes
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-k", dest="only", action="append", help="only mutations whose file or text has this"
    )
    parser.add_argument("-j", "--jobs", type=int, default=1, help="mutations run at once")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per test run")
    parser.add_argument("--list", action="store_true", help="show where each mutation applies")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated runs")
    args = parser.parse_args(argv)

    chosen = [
        (n, m)
        for n, m in enumerate(MUTATIONS, 1)
        if not args.only
        or any(word in s for word in args.only for s in (m.file, m.original, m.breaks))
    ]
    numbers = [n for n, _ in chosen]  # as in the full list, so a number always means one
    located = [locate(m, ROOT) for _, m in chosen]
    if args.list:
        for n, loc in zip(numbers, located, strict=True):
            where = loc.file or loc.mutation.file
            print(f"{n:3} {loc.note or 'found':10} {where}: {loc.mutation.breaks}")
        missing = sum(1 for loc in located if not loc.file)
        print(f"\n{len(located) - missing} of {len(located)} found; {missing} not found")
        return 0
    found = [loc for loc in located if loc.file]

    with tempfile.TemporaryDirectory(prefix="retrieval-mutation-") as scratch:
        copies: queue.Queue[Path] = queue.Queue()
        for j in range(max(1, args.jobs)):
            copies.put(copy_repo(Path(scratch) / str(j)))
        baseline: dict[frozenset[str], str] = {}  # by test selection, in any order
        if not args.no_baseline:
            for tests in dict.fromkeys(frozenset(loc.mutation.tests) for loc in found):
                copy = copies.get()
                baseline[tests], seconds = run_tests(copy, tuple(sorted(tests)), args.timeout * 3)
                copies.put(copy)
                print(f"baseline {baseline[tests]:7} {seconds:6.1f}s  {' '.join(sorted(tests))}")
        results: dict[int, tuple[str, float]] = {}

        def work(n: int, loc: Located) -> None:
            if baseline.get(frozenset(loc.mutation.tests), "passed") != "passed":
                results[n] = ("baseline fails", 0.0)
                return
            copy = copies.get()
            path = copy / str(loc.file)
            old = apply(path, loc.mutation.original, loc.mutation.mutated)
            try:
                outcome, seconds = run_tests(copy, loc.mutation.tests, args.timeout)
            finally:
                path.write_text(old)
                copies.put(copy)
            verdict = "survived" if outcome == "passed" else "killed"
            results[n] = (verdict + (" (timeout)" if outcome == "timeout" else ""), seconds)
            print(f"  {n:3} {results[n][0]:17} {seconds:6.1f}s  {loc.mutation.breaks}")

        pending = list(zip(numbers, located, strict=True))
        threads = []
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if not pending:
                        return
                    n, loc = pending.pop(0)
                if loc.file:
                    work(n, loc)

        for _ in range(max(1, args.jobs)):
            threads.append(threading.Thread(target=worker))
            threads[-1].start()
        for thread in threads:
            thread.join()

    print()
    print(f"{'#':>3} {'result':17} {'seconds':>7}  mutation")
    killed = scored = 0
    for n, loc in zip(numbers, located, strict=True):
        verdict, seconds = results.get(n, (loc.note, 0.0))
        where = f"{loc.file or loc.mutation.file}: {loc.mutation.breaks}"
        print(f"{n:3} {verdict:17} {seconds:7.1f}  {where}")
        if verdict.startswith(("killed", "survived")):
            scored += 1
            killed += verdict.startswith("killed")
    missing = sum(1 for loc in located if not loc.file)
    skipped = sum(1 for v, _ in results.values() if v == "baseline fails")
    score = 100.0 * killed / scored if scored else 0.0
    print(
        f"\nscore: {killed} of {scored} mutations killed ({score:.1f}%); "
        f"{missing} not found, {skipped} skipped (baseline fails)"
    )
    return 0 if killed == scored else 1


if __name__ == "__main__":
    sys.exit(main())
