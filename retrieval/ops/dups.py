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

from dataclasses import dataclass
from typing import Any

from ..pathnames import display, to_str

#: Groups up to this many members get their minimum pairwise cosine computed exactly
#: (n^2/2 dot products); larger groups report the minimum cosine to the keeper instead.
EXACT_MIN_MEMBERS = 500
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
