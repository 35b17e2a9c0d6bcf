"""Near-duplicate groups: `retrieval dups` and `Index.dups`.

The report types below are the contract with the "acting on it" half (`--apply`, `--move-to`):

- `DupsReport.groups` is a tuple of `DupGroup`, largest first (then by the keeper's path).
- `DupGroup.members` is a tuple of `DupMember` in keeper-first order: the members kept
  (`is_keeper`) come first, ranked by the keep rules, then the others in the same rank order.
  A group has exactly one keeper unless it holds reference files (`--reference DIR`): then
  every reference member is a keeper and only they are (reference files are never moved).
- `DupMember.score` is the exact cosine between that member's stored full vector and the
  first keeper's (`members[0]`; 1.0 for itself).
- `DupGroup.min_similarity` is the lowest exact pairwise cosine among the members, so a chain
  A~B~C (A and C below the threshold) shows a value below the threshold; it is exact for
  groups of up to `EXACT_MIN_MEMBERS` members, and for larger ones the lowest cosine to the
  first keeper (an upper bound of the true minimum), with `min_exact=False`.
- Paths are absolute, raw bytes as the catalogue stores them; `to_dict()` gives them as `str`
  (surrogate-escaped where not UTF-8, lossless, JSON-safe).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import defaults
from ..errors import UsageError
from ..pathnames import display, prefix_bounds, to_str
from ..store.index_dir import IndexDir
from ..store.searcher import RangeFinder

#: progress(done, total): images searched so far, of those to search.
Progress = Callable[[int, int], None]

#: Groups up to this many members get their minimum pairwise cosine computed exactly
#: (n^2/2 dot products); larger groups report the minimum cosine to the keeper instead.
EXACT_MIN_MEMBERS = 500
#: With an IVF-Flat cache, each vector meets the vectors of its JOIN_PROBE nearest lists
#: (see store.vectors_join; 4 recovered every planted group in tests/bench_dups.py).
JOIN_PROBE = 4
#: Query vectors searched at once (8 MB at 512-d, 32 MB at 2048-d).
QUERY_BATCH = 4096
#: Groups listed in the text report (`lines`); JSON/CSV/HTML carry them all.
LISTED_GROUPS = 50


@dataclass(frozen=True)
class DupMember:
    """One image of a duplicate group.

    id: catalogue row id; path: absolute, raw bytes; size: bytes on disk when indexed;
    width/height: pixels (0 when unknown, e.g. imported rows); mtime_ns: modification time
    in ns when indexed; score: exact cosine to the group's first keeper (1.0 for that keeper);
    is_keeper: suggested to keep; is_reference: under a `--reference` folder (always kept).
    """

    id: int
    path: bytes
    size: int
    width: int
    height: int
    mtime_ns: int
    score: float
    is_keeper: bool
    is_reference: bool

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": to_str(self.path),
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "mtime_ns": self.mtime_ns,
            "score": round(self.score, 6),
            "keep": self.is_keeper,
            "reference": self.is_reference,
        }


@dataclass(frozen=True)
class DupGroup:
    """A connected component of the "cosine >= threshold" graph with 2 or more members.

    members: keeper(s) first (see the module docstring); min_similarity: lowest pairwise
    exact cosine among members (`min_exact` False: lowest cosine to the first keeper, for
    groups above EXACT_MIN_MEMBERS).
    """

    members: tuple[DupMember, ...]
    min_similarity: float
    min_exact: bool = True

    @property
    def keepers(self) -> tuple[DupMember, ...]:
        return tuple(m for m in self.members if m.is_keeper)

    @property
    def others(self) -> tuple[DupMember, ...]:
        """The members not kept: what `--apply` would act on."""
        return tuple(m for m in self.members if not m.is_keeper)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": len(self.members),
            "min_similarity": round(self.min_similarity, 6),
            "min_similarity_exact": self.min_exact,
            "members": [m.to_dict() for m in self.members],
        }


@dataclass(frozen=True)
class DupsReport:
    """What `dups` found.

    threshold: the cosine at or above which two images are duplicates; keep: the keep rules
    applied, in order; reference: the reference folders (raw bytes); under: the `--under`
    folders (raw bytes, empty: the whole index); searched: images whose neighbours were
    searched (those under `under`, or all); groups: see DupGroup; seconds: wall time.
    """

    threshold: float
    keep: tuple[str, ...]
    reference: tuple[bytes, ...]
    under: tuple[bytes, ...]
    searched: int
    groups: tuple[DupGroup, ...]
    seconds: float

    @property
    def duplicates(self) -> int:
        """Members that are not kept, over all groups."""
        return sum(len(g.others) for g in self.groups)

    @property
    def images_in_groups(self) -> int:
        return sum(len(g.members) for g in self.groups)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "keep": list(self.keep),
            "reference": [to_str(p) for p in self.reference],
            "under": [to_str(p) for p in self.under],
            "searched": self.searched,
            "groups_found": len(self.groups),
            "images_in_groups": self.images_in_groups,
            "duplicates": self.duplicates,
            "seconds": round(self.seconds, 3),
            "groups": [g.to_dict() for g in self.groups],
        }

    def summary(self) -> str:
        return (
            f"{len(self.groups)} group(s) of near-duplicates (cosine >= {self.threshold:g}) "
            f"among {self.searched} image(s) searched: {self.images_in_groups} image(s) in "
            f"groups, {self.duplicates} not kept ({self.seconds:.1f} s)"
        )

    def lines(self) -> list[str]:
        """The table format: per group a header, then `keep|dup score path` per member."""
        if not self.groups:
            return [self.summary()]
        out = []
        for number, group in enumerate(self.groups[:LISTED_GROUPS], 1):
            exact = "" if group.min_exact else " (to keeper; group too large for all pairs)"
            out.append(
                f"group {number}: {len(group.members)} images, "
                f"min similarity {group.min_similarity:.4f}{exact}"
            )
            for m in group.members:
                mark = ("ref " if m.is_reference else "keep") if m.is_keeper else "dup "
                out.append(f"  {mark} {m.score:.4f} {display(m.path)}")
        if len(self.groups) > LISTED_GROUPS:
            left = len(self.groups) - LISTED_GROUPS
            out.append(f"... and {left} more group(s) (use --format json/csv/html for all)")
        out.append(self.summary())
        return out


# -- the use case ----------------------------------------------------------------------------


def check_options(
    threshold: float, keep: Sequence[str], reference: Sequence[bytes]
) -> tuple[str, ...]:
    """The keep rules as a tuple, after checking every option; raises UsageError."""
    if not 0.0 < threshold <= 1.0:
        raise UsageError(f"threshold {threshold:g} is outside (0, 1]; e.g. --threshold 0.95")
    known = [name for name, _ in defaults.KEEP_RULES]
    rules = tuple(keep)
    for rule in rules:
        if rule not in known:
            raise UsageError(f"unknown keep rule {rule!r}; the rules are: {', '.join(known)}")
    for folder in reference:
        if not os.path.isdir(folder):
            raise UsageError(
                f"reference folder {display(folder)} does not exist or is not a folder; "
                "name an existing folder whose files are always kept"
            )
    return rules


def find_dups(
    index_dir: IndexDir,
    threshold: float = defaults.DUPS_THRESHOLD,
    under: Sequence[bytes] = (),
    keep: Sequence[str] = defaults.DUPS_KEEP,
    reference: Sequence[bytes] = (),
    progress: Progress | None = None,
) -> DupsReport:
    """Near-duplicate groups among the stored vectors (see the module docstring).

    `under` (absolute folders, raw bytes): only groups holding an image under one of them;
    `reference` (absolute folders): their images are always kept. Sees one catalogue snapshot.
    """
    started = time.monotonic()
    rules = check_options(threshold, keep, reference)
    cache = index_dir.cache
    manifest = index_dir.require_manifest()
    base = cache.base()  # before the snapshot: its generation <= the snapshot's
    cache.reduction()
    with index_dir.catalog.read() as conn:
        finder = RangeFinder(cache, conn, base, threshold)
        catalog = index_dir.catalog
        queries = catalog.filter_ids(conn, under=under)
        if not under and finder.can_join():  # the whole index: one join, no per-query scans
            a, b, _ = finder.join(JOIN_PROBE, _per_list(progress, len(queries)))
        else:
            a, b = _edges(finder, catalog, conn, queries, manifest.dim, progress)
        components = _components(a, b)
        rows = catalog.image_rows(conn, np.concatenate(components) if components else [])
        groups = [
            _group(ids, rows, catalog, conn, manifest.dim, rules, reference) for ids in components
        ]
    groups.sort(key=lambda g: (-len(g.members), g.members[0].path))
    return DupsReport(
        threshold,
        rules,
        tuple(reference),
        tuple(under),
        len(queries),
        tuple(groups),
        time.monotonic() - started,
    )


def _edges(
    finder: RangeFinder,
    catalog: Any,
    conn: Any,
    queries: np.ndarray,
    dim: int,
    progress: Progress | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (a, b) of ids >= the threshold reachable from `queries`: the images found
    that were not queries are searched in turn, so a group reaching outside `under` is whole."""
    searched = np.zeros(0, np.int64)
    todo = queries
    edges_a: list[np.ndarray] = []
    edges_b: list[np.ndarray] = []
    done = 0
    while len(todo):
        for ids, xq in _vectors(catalog, conn, todo, dim):
            a, b, _ = finder.pairs(ids, xq)
            edges_a.append(a)
            edges_b.append(b)
            done += len(ids)
            if progress is not None:
                progress(done, max(done, len(queries)))
        searched = np.union1d(searched, todo)
        found = np.unique(np.concatenate(edges_b)) if edges_b else np.zeros(0, np.int64)
        todo = np.setdiff1d(found, searched, assume_unique=True)
    if not edges_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(edges_a), np.concatenate(edges_b)


def _per_list(progress: Progress | None, total: int) -> Callable[[int, int], None] | None:
    """Lists joined -> images searched, for a progress bar counting images."""
    if progress is None:
        return None
    return lambda done, lists: progress(total * done // max(lists, 1), total)


def _vectors(
    catalog: Any, conn: Any, ids: np.ndarray, dim: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids (b,), full stored vectors (b, dim) float32) of `ids`, QUERY_BATCH at a time."""
    for start in range(0, len(ids), QUERY_BATCH):
        found, xq = catalog.vectors_matrix(conn, ids[start : start + QUERY_BATCH].tolist(), dim)
        if len(found):
            yield found, xq


def _components(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Connected components (sorted id arrays) with 2+ members of the graph of edges a-b."""
    if len(a) == 0:
        return []
    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    parent = np.arange(len(nodes))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    half = len(a)
    for x, y in zip(inverse[:half].tolist(), inverse[half:].tolist(), strict=True):
        rx, ry = root(x), root(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    roots = np.array([root(x) for x in range(len(nodes))])
    order = np.argsort(roots, kind="stable")
    splits = np.flatnonzero(np.diff(roots[order])) + 1
    return [nodes[part] for part in np.split(order, splits) if len(part) > 1]


def _group(
    ids: np.ndarray,
    rows: dict[int, Any],
    catalog: Any,
    conn: Any,
    dim: int,
    rules: tuple[str, ...],
    reference: Sequence[bytes],
) -> DupGroup:
    """One DupGroup: members ranked by the keep rules, scores and min_similarity exact."""
    found, xb = catalog.vectors_matrix(conn, ids.tolist(), dim)
    members = [rows[int(i)] for i in found]
    is_ref = [_under_any(m.path, reference) for m in members]
    order = sorted(range(len(members)), key=lambda j: rank_key(members[j], rules))
    if any(is_ref):  # every reference member is kept, and only they are
        order = [j for j in order if is_ref[j]] + [j for j in order if not is_ref[j]]
        kept = {j for j in order if is_ref[j]}
    else:
        kept = {order[0]}
    xb = xb[order]
    scores = xb @ xb[0]
    if len(xb) <= EXACT_MIN_MEMBERS:
        minimum, exact = float((xb @ xb.T).min()), True
    else:
        minimum, exact = float(scores.min()), False
    out = tuple(
        DupMember(
            id=int(m.id),
            path=m.path,
            size=int(m.size),
            width=int(m.width or 0),
            height=int(m.height or 0),
            mtime_ns=int(m.mtime_ns),
            score=float(min(scores[pos], 1.0)),
            is_keeper=j in kept,
            is_reference=is_ref[j],
        )
        for pos, (j, m) in enumerate((j, members[j]) for j in order)
    )
    return DupGroup(out, min(minimum, 1.0), exact)


def rank_key(row: Any, rules: Sequence[str]) -> tuple[Any, ...]:
    """Sort key of a catalogue row (path, size, mtime_ns, width, height, id) under the keep
    rules: the row to keep sorts first; ties end on the path's bytes, then the id."""
    pixels = int(row.width or 0) * int(row.height or 0)
    values = {
        "pixels": -pixels,
        "fewest-pixels": pixels,
        "bytes": -int(row.size),
        "smallest": int(row.size),
        "oldest": int(row.mtime_ns),
        "newest": -int(row.mtime_ns),
        "path": len(row.path),
        "longest-path": -len(row.path),
    }
    return (*(values[rule] for rule in rules), row.path, int(row.id))


def _under_any(path: bytes, folders: Sequence[bytes]) -> bool:
    return any(prefix_bounds(f)[0] <= path < prefix_bounds(f)[1] for f in folders)
