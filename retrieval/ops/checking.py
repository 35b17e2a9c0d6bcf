"""Verifying an index directory, and repairing what can be rebuilt (`retrieval check`).

The catalogue (catalog.sqlite) is the source of truth; nothing can rebuild it, so a catalogue
that fails SQLite's `integrity_check` raises CatalogCorrupt. Everything else derives from it:

    vectors.faiss    readable, checksum intact, ids equal to the stored vectors (after the
                     catalogue changes made since it was written), no duplicate ids, and for
                     exact layouts the very same vectors       -> --repair rebuilds it
    manifest.json    equal to the catalogue's copy             -> --repair rewrites it
    .NAME.tmp-*      temporary files a killed run left behind  -> --repair deletes them
    thumbnails/      the thumbnail cache (`store.thumbnails`): its size is reported; damaged
                     entries, stray files and temporary files -> --repair deletes them;
                     a cache folder that is a link or a file  -> --repair drops it

Rows whose files are gone from disk are reported as a warning, not as damage: the index is
sound, only out of date (`retrieval prune` removes them; --repair does not).

The check holds the writer lock, so no run changes the index while it looks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import defaults
from ..errors import CatalogCorrupt, StorageError
from ..pathnames import display
from ..reports import SKIP, JsonReport, json_field, plain
from ..store.catalog import Catalog
from ..store.files import is_temp
from ..store.index_dir import IndexDir
from ..store.manifest import Manifest
from ..store.thumbnails import ThumbnailCache
from ..store.vector_cache import VectorsDamaged
from . import pruning

#: Vectors compared per step (bounded memory on large indexes).
_CHUNK = 65536


@dataclass(frozen=True)
class Problem(JsonReport):
    """One thing wrong with an index: the file, what is wrong, and the repair."""

    file: str
    problem: str
    repair: str  # what --repair does (or did) about it
    repaired: bool = False


def _missing(report: CheckReport) -> dict[str, Any]:
    return {"count": report.missing_files, "examples": plain(report.missing_examples)}


@dataclass(frozen=True)
class CheckReport(JsonReport):
    """What `check` found: facts about the index and its problems (repaired or not)."""

    index: str = json_field(keys=lambda r: {"index": r.index, "ok": r.ok})
    images: int
    failed: int
    generation: int
    problems: tuple[Problem, ...]
    # rows whose files are gone from disk (a warning), and the first few of them, by id
    missing_files: int = json_field(0, keys=lambda r: {"missing_files": _missing(r)})
    missing_examples: tuple[bytes, ...] = json_field((), json=SKIP)
    # (entries, bytes) of the thumbnail cache; None when the index has none
    thumbnail_cache: tuple[int, int] | None = json_field(
        None, json=lambda c: {"entries": c[0], "bytes": c[1]}, omit_none=True
    )

    @property
    def ok(self) -> bool:
        """True when no problem remains (none found, or all repaired)."""
        return all(p.repaired for p in self.problems)

    def lines(self) -> list[str]:
        """The report as text lines: the index, one line per problem, a verdict."""
        out = [
            f"checked {self.index}: {self.images} images, {self.failed} failed, "
            f"generation {self.generation}"
        ]
        for p in self.problems:
            action = f"repaired: {p.repair}" if p.repaired else f"--repair {p.repair}"
            out.append(f"  {p.file}: {p.problem} ({action})")
        if self.missing_files:
            examples = ", ".join(display(p) for p in self.missing_examples)
            more = ", ..." if self.missing_files > len(self.missing_examples) else ""
            out.append(
                f"warning: {self.missing_files} indexed file(s) no longer exist ({examples}"
                f"{more}); `retrieval prune --index {self.index}` removes them from the index"
            )
        if self.thumbnail_cache is not None:
            entries, size = self.thumbnail_cache
            out.append(f"  thumbnail cache: {entries} entries, {size / 2**20:.1f} MiB")
        left = [p for p in self.problems if not p.repaired]
        if not self.problems:
            out.append("ok: no problems found")
        elif not left:
            out.append(f"ok: {len(self.problems)} problem(s) found and repaired")
        else:
            out.append(
                f"{len(left)} problem(s) found; repair them with "
                f"`retrieval check --repair --index {self.index}`"
            )
        return out


def check(
    directory: str | os.PathLike[str], repair: bool = False, wait: bool = False
) -> CheckReport:
    """Verify the index at `directory`; with `repair`, rebuild what is derived and damaged.

    Raises IndexNotFound, IndexBusy (a writer is running; `wait` queues behind it) and
    CatalogCorrupt (the catalogue itself is damaged: see its message).
    """
    directory = os.path.abspath(os.fspath(directory))
    with (
        IndexDir.open_for_check(directory, repair, wait) as index_dir,
        _cache(index_dir).locked(),  # no thumbnail is written while the cache is looked at
    ):
        found, facts = _inspect(index_dir)
        gone = pruning.missing_files(index_dir.catalog)
        missing = {
            "missing_files": len(gone),
            "missing_examples": tuple(p for _, p in gone[: pruning.MISSING_EXAMPLES]),
        }
        if not (repair and found):
            cached = _cache_size(index_dir)
            return CheckReport(
                directory, *facts, problems=tuple(found), **missing, thumbnail_cache=cached
            )
        _repair(index_dir, found)
        left, facts = _inspect(index_dir)
        remaining = {(p.file, p.problem) for p in left}
        fixed = [
            Problem(p.file, p.problem, p.repair, (p.file, p.problem) not in remaining)
            for p in found
        ]
        problems = tuple(fixed + _new(left, found))
        cached = _cache_size(index_dir)
        return CheckReport(directory, *facts, problems=problems, **missing, thumbnail_cache=cached)


def _new(left: list[Problem], found: list[Problem]) -> list[Problem]:
    before = {(p.file, p.problem) for p in found}
    return [p for p in left if (p.file, p.problem) not in before]


# -- inspecting ----------------------------------------------------------------------------------


def _inspect(index_dir: IndexDir) -> tuple[list[Problem], tuple[int, int, int]]:
    """(problems, (images, failed, generation)); raises CatalogCorrupt / IndexNotFound."""
    catalog = index_dir.catalog
    damage = catalog.integrity_check()
    if damage:
        more = f" and {len(damage) - 1} more" if len(damage) > 1 else ""
        raise CatalogCorrupt(catalog.path, f"integrity_check: {damage[0]}{more}")
    manifest = index_dir.require_manifest()
    with catalog.read() as conn:
        counts = catalog.counts(conn)
        generation = catalog.generation(conn)
    problems = _foreign_objects(catalog)
    problems += _temp_files(index_dir.directory)
    problems += _thumbnail_cache(index_dir)
    sizes = _vector_sizes(catalog, manifest)
    if sizes:
        # The manifest does not describe the vectors: nothing derived from it is checked,
        # and --repair rewrites nothing from it.
        return problems + sizes, (counts["ok"], counts["failed"], generation)
    problems += _manifest_file(index_dir)
    if index_dir.cache.kind == "milvus":
        problems += _milvus_collection(index_dir, manifest, generation)
    else:
        problems += _vectors_file(index_dir, manifest, generation)
    return problems, (counts["ok"], counts["failed"], generation)


def _vector_sizes(catalog: Catalog, manifest: Manifest) -> list[Problem]:
    """Stored vectors whose size is not the manifest's dim (an edited manifest, say)."""
    wrong = {size: n for size, n in catalog.vector_sizes().items() if size != manifest.dim}
    return [
        Problem(
            defaults.CATALOG_FILE,
            f"holds {n} vectors of {size} values but its manifest says {manifest.dim}-d "
            f"{manifest.vector_dtype} ({manifest.model.name})",
            "cannot fix this: restore the catalogue from a backup, or rebuild the index",
        )
        for size, n in sorted(wrong.items())
    ]


#: The repair of a schema object retrieval did not create.
_DROPS = "drops it"


def _foreign_objects(catalog: Catalog) -> list[Problem]:
    """Triggers, views, tables and indexes in the catalogue that retrieval did not create."""
    return [
        Problem(
            defaults.CATALOG_FILE, f"holds a {kind} {name!r} that retrieval did not create", _DROPS
        )
        for kind, name in catalog.foreign_objects()
    ]


def _temp_files(directory: str) -> list[Problem]:
    return [
        Problem(name, "temporary file left by an interrupted run", "deletes it")
        for name in sorted(os.listdir(directory))
        if is_temp(name)
    ]


#: The repairs of the thumbnail cache (its entries are remade on demand).
_DELETES_ENTRY = "deletes it (remade when next shown)"
_DROPS_CACHE = "drops the cache folder (remade when next shown)"


def _cache(index_dir: IndexDir) -> ThumbnailCache:
    return ThumbnailCache(index_dir.directory, writable=index_dir.lock is not None)


def _cache_size(index_dir: IndexDir) -> tuple[int, int] | None:
    cache = _cache(index_dir)
    if not cache.exists() or cache.folder_problem():
        return None
    usage = cache.inspect()
    return usage.entries, usage.bytes


def _thumbnail_cache(index_dir: IndexDir) -> list[Problem]:
    """A cache folder that is not a folder; damaged entries, stray and temporary files."""
    cache = _cache(index_dir)
    folder = defaults.THUMBNAIL_DIR
    problem = cache.folder_problem()
    if problem:
        return [Problem(folder, problem, _DROPS_CACHE)]
    if not cache.exists():
        return []
    usage = cache.inspect(verify=True)
    damaged = [
        Problem(f"{folder}/{name}", "not a whole thumbnail (damaged or stray)", _DELETES_ENTRY)
        for name in usage.damaged
    ]
    temps = [
        Problem(f"{folder}/{name}", "temporary file left by an interrupted run", "deletes it")
        for name in usage.temps
    ]
    return damaged + temps


#: How `check` words each `IndexDir.manifest_file_problem` (else "unreadable").
_MANIFEST_WORDS = {"differs": "differs from the catalogue's manifest", "missing": "missing"}


def _manifest_file(index_dir: IndexDir) -> list[Problem]:
    problem = index_dir.manifest_file_problem()
    if problem is None:
        return []
    text = _MANIFEST_WORDS.get(problem, "unreadable")
    return [Problem(defaults.MANIFEST_FILE, text, "rewrites it from the catalogue")]


def _vectors_file(index_dir: IndexDir, manifest: Manifest, generation: int) -> list[Problem]:
    def problem(text: str) -> list[Problem]:
        return [Problem(defaults.VECTORS_FILE, text, "rebuilds it from the catalogue")]

    try:
        built = index_dir.cache.read_file()
    except VectorsDamaged as exc:
        return problem(str(exc))
    if built.catalog_id != index_dir.catalog_id:
        return problem("was built from another catalogue (its catalogue id differs)")
    if built.index.d != manifest.cache_dim:
        return problem(f"holds {built.index.d}-d vectors, the manifest says {manifest.cache_dim}")
    if built.generation > generation:
        return problem(
            f"claims catalogue generation {built.generation}, newer than the catalogue's "
            f"{generation}"
        )
    held = index_dir.cache.held_ids(built)
    duplicates = len(held) - len(np.unique(held))
    if duplicates:
        return problem(f"holds {duplicates} duplicate ids")
    catalog = index_dir.catalog
    index_dir.reduction()  # read before the snapshot below
    with catalog.read() as conn:
        delta = catalog.delta(conn, built.generation, manifest.dim)
        gone = np.union1d(delta.stale, built.tombstones)
        live = np.sort(held[~np.isin(held, gone)])
        try:
            stored = _stored_ids(catalog, conn, manifest.dim)
            expected = np.setdiff1d(stored, gone)
            extra, lacking = np.setdiff1d(live, expected), np.setdiff1d(expected, live)
            if len(extra) or len(lacking):
                return problem(
                    f"holds {len(extra)} ids the catalogue does not and lacks {len(lacking)} "
                    "of its vectors"
                )
            differ = index_dir.cache.differing(built, conn, live, batch=_CHUNK)
        except ValueError:
            raise CatalogCorrupt(catalog.path, "a stored vector has the wrong size") from None
    if differ:
        return problem(f"{differ} vectors differ from the ones in the catalogue")
    return []


#: Vectors of a Milvus collection compared with the catalogue's (a random sample).
MILVUS_SAMPLE = 1000


def _milvus_collection(index_dir: IndexDir, manifest: Manifest, generation: int) -> list[Problem]:
    """The Milvus collection of an index made with `--vectors milvus:URI`: present and this
    catalogue's, its ids those of the stored vectors (after the changes made since it was
    synced), its index the manifest's type, a sample of its vectors the stored ones."""
    cache: Any = index_dir.cache

    def problem(text: str) -> list[Problem]:
        return [Problem(cache.path, text, "rebuilds it from the catalogue")]

    reason = cache.problem()
    if reason:
        return problem("is missing" if reason == "missing" else reason)
    base = cache.base()
    if base.generation > generation:
        return problem(f"claims catalogue generation {base.generation}, newer than {generation}")
    held = cache.held_ids()
    if len(held) != len(np.unique(held)):
        return problem(f"holds {len(held) - len(np.unique(held))} duplicate ids")
    catalog = index_dir.catalog
    with catalog.read() as conn:
        delta = catalog.delta(conn, base.generation, manifest.dim)
        live = np.sort(held[~np.isin(held, delta.stale)])
        expected = np.setdiff1d(_stored_ids(catalog, conn, manifest.dim), delta.stale)
        extra, lacking = np.setdiff1d(live, expected), np.setdiff1d(expected, live)
        if len(extra) or len(lacking):
            return problem(
                f"holds {len(extra)} ids the catalogue does not and lacks {len(lacking)} of its "
                "vectors"
            )
        rng = np.random.default_rng(0)
        sample = rng.choice(live, min(MILVUS_SAMPLE, len(live)), replace=False)
        differ = cache.sample_differing(conn, np.sort(sample))
    if differ:
        return problem(f"{differ} of {len(sample)} sampled vectors differ from the catalogue's")
    wanted = cache.milvus_type()
    if cache.index_type() != wanted:
        return problem(f"its index is {cache.index_type()}, not the manifest's {wanted}")
    return []


def _stored_ids(catalog: Catalog, conn: Any, dim: int) -> np.ndarray:
    parts = [ids for ids, _ in catalog.iter_vectors(conn, dim, batch=_CHUNK)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


# -- repairing -------------------------------------------------------------------------------------


def _repair(index_dir: IndexDir, problems: list[Problem]) -> None:
    files = {p.file for p in problems}
    if any(p.repair == _DROPS for p in problems):  # first: a trigger could fire on our writes
        index_dir.catalog.drop_foreign()
    _repair_cache(index_dir, problems)
    for name in files:
        if is_temp(name):
            try:
                os.unlink(os.path.join(index_dir.directory, name))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StorageError(f"cannot delete {name}: {exc.strerror or exc}") from None
    if defaults.MANIFEST_FILE in files:
        index_dir.write_manifest_file()
    if defaults.VECTORS_FILE in files or index_dir.vectors_path in files:
        index_dir.rebuild_vectors()
        failed = [n for n in index_dir.notices if n.startswith("could not save")]
        if failed:
            raise StorageError(failed[0])


def _repair_cache(index_dir: IndexDir, problems: list[Problem]) -> None:
    cache = _cache(index_dir)
    prefix = f"{defaults.THUMBNAIL_DIR}/"
    if any(p.file == defaults.THUMBNAIL_DIR for p in problems):
        cache.drop()
    cache.remove([p.file[len(prefix) :] for p in problems if p.file.startswith(prefix)])
