"""Forgetting what is gone from disk: `retrieval prune`, and the missing-files count of `check`.

`index` never drops the images of a root it cannot see (an unplugged drive looks like a
deleted folder), so rows whose files were deleted outside any re-scanned root stay until
`prune` removes them. A file is gone only when stat says so (ENOENT/ENOTDIR); a permission
or I/O error keeps its row. Removal goes through the catalogue's own `remove` (logged in
`removals`, one transaction) and the vector cache is then brought up to date, exactly as
`index` does for vanished files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..pathnames import display
from ..reports import SKIP, JsonReport, json_field, plain
from ..sources.scan import vanished
from ..store.catalog import Catalog
from ..store.index_dir import IndexDir

#: Paths listed by `check` as examples of files gone from disk.
MISSING_EXAMPLES = 5
#: Paths listed one per line in the text report of `prune --dry-run`.
LISTED = 50


def _removed(report: PruneReport) -> dict[str, Any]:
    """`dry_run` first, then how many rows and their paths."""
    return {
        "dry_run": report.dry_run,
        "removed": len(report.removed),
        "paths": plain(report.removed),
    }


@dataclass
class PruneReport(JsonReport):
    """What `prune` removed (or, with `dry_run`, would remove): rows by path, and roots."""

    removed: list[bytes] = json_field(default_factory=list, keys=lambda r: _removed(r))
    forgotten: list[bytes] = json_field(default_factory=list, key="forgotten_roots")
    dry_run: bool = json_field(False, json=SKIP)  # in the JSON with `removed`, first
    # --root given: the rows under those roots, whether on disk or not
    named_roots: bool = json_field(False, json=SKIP)

    def lines(self) -> list[str]:
        if not self.removed and not self.forgotten:
            return ["nothing to prune: every indexed file and remembered root is on disk"]
        verb, forget = ("would remove", "would forget") if self.dry_run else ("removed", "forgot")
        why = "under the forgotten root(s)" if self.named_roots else "whose files no longer exist"
        out = [f"{verb} {len(self.removed)} indexed image(s) {why}"]
        if self.dry_run:
            out += [f"  {display(p)}" for p in self.removed[:LISTED]]
            if len(self.removed) > LISTED:
                out.append(f"  ... and {len(self.removed) - LISTED} more (use --json for all)")
        if self.forgotten:
            shown = ", ".join(display(p) for p in self.forgotten)
            out.append(f"{forget} {len(self.forgotten)} root(s): {shown}")
        if self.dry_run:
            out.append("nothing was changed; run without --dry-run to prune")
        return out


def missing_files(catalog: Catalog) -> list[tuple[int, bytes]]:
    """(id, path) of every row whose file is gone from disk, in id order (a stat per row)."""
    return [(i, p) for batch in catalog.iter_paths() for i, p in batch if vanished(p)]


def prune(index_dir: IndexDir, roots: Sequence[bytes] = (), dry_run: bool = False) -> PruneReport:
    """Remove the rows whose files are gone and forget remembered roots that are gone; with
    `roots` (absolute paths), forget those roots and remove every row at or under them.

    `index_dir` must hold the writer lock unless `dry_run`. Raises UsageError for a root that
    is neither remembered nor holds any row."""
    catalog = index_dir.catalog
    remembered = catalog.remembered_roots()
    if roots:
        rows = _rows_under(catalog, roots, remembered)
        forgotten = [r for r in dict.fromkeys(roots) if r in remembered]
    else:
        rows = missing_files(catalog)
        forgotten = [r for r in remembered if vanished(r)]
    report = PruneReport([p for _, p in rows], forgotten, dry_run, bool(roots))
    if dry_run:
        return report
    if rows:
        catalog.remove([i for i, _ in rows])
    if forgotten:
        catalog.forget_roots(forgotten)
    if rows:
        index_dir.sync_vectors()
    return report


def _rows_under(
    catalog: Catalog, roots: Sequence[bytes], remembered: list[bytes]
) -> list[tuple[int, bytes]]:
    found: dict[int, bytes] = {}
    for root in roots:
        under = catalog.rows_at_or_under(root)
        if not under and root not in remembered:
            known = ", ".join(display(r) for r in remembered) or "none"
            raise UsageError(
                f"{display(root)} is not a root this index remembers and no indexed image lies "
                f"under it; the remembered roots are: {known}"
            )
        found.update(under)
    return sorted(found.items())
