"""`retrieval.reports`: every report's `to_dict()` (the `--json` output) from its fields.

The JSON of each report is pinned here byte for byte (keys, order, rounding, lossless
non-UTF-8 paths): the output is an interface, and these strings are what it was before
`to_dict` stopped being written by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from retrieval.ops.ann import OptimizeReport, RecallReport
from retrieval.ops.checking import CheckReport, Problem
from retrieval.ops.exchange import ExportReport
from retrieval.ops.importing import ImportReport
from retrieval.ops.indexing import IndexReport
from retrieval.ops.pruning import PruneReport
from retrieval.ops.searching import QueryResult
from retrieval.reports import SKIP, JsonReport, json_field, rounded
from retrieval.store.index_dir import Neighbour

RECALL = RecallReport(10, 200, 0.987654321, 0.123456789, 1.987654321)
FIXED = Problem("vectors.faiss", "missing", "rebuild it", True)
OPEN = Problem("manifest.json", "differs", "rewrite it")
CASES = [
    (
        IndexReport(),
        '{"added": 0, "updated": 0, "unchanged": 0, "moved": 0, "removed": 0, "failed": [], '
        '"seconds": 0.0}',
    ),
    (
        IndexReport(3, 1, 7, 2, 1, [(b"/a/\xff.jpg", "bad")], 12.34567, []),
        '{"added": 3, "updated": 1, "unchanged": 7, "moved": 2, "removed": 1, "failed": '
        '[{"path": "/a/\\udcff.jpg", "error": "bad"}], "seconds": 12.346}',
    ),
    (
        ImportReport(5, 2, 96, ("/x.parquet", "/y.npy"), 1.23456),
        '{"added": 5, "updated": 2, "dim": 96, "files": ["/x.parquet", "/y.npy"], '
        '"seconds": 1.235}',
    ),
    (ExportReport(0, 16, ()), '{"rows": 0, "dim": 16, "files": []}'),
    (
        RECALL,
        '{"k": 10, "queries": 200, "recall@10": 0.9877, "ms_per_query": 0.1235, '
        '"exact_ms_per_query": 1.9877}',
    ),
    (
        OptimizeReport({"type": "flat"}, {"type": "ivf"}, True, {"nprobe": 8}, RECALL, 2.34567),
        '{"before": {"type": "flat"}, "after": {"type": "ivf"}, "rebuilt": true, "tuned": '
        '{"nprobe": 8}, "recall": {"k": 10, "queries": 200, "recall@10": 0.9877, '
        '"ms_per_query": 0.1235, "exact_ms_per_query": 1.9877}, "seconds": 2.346}',
    ),
    (
        OptimizeReport({}, {}, False),
        '{"before": {}, "after": {}, "rebuilt": false, "tuned": {}, "recall": null, '
        '"seconds": 0.0}',
    ),
    (
        CheckReport("/idx", 10, 2, 7, (FIXED, OPEN), 3, (b"/gone/\xfe.jpg",)),
        '{"index": "/idx", "ok": false, "images": 10, "failed": 2, "generation": 7, '
        '"problems": [{"file": "vectors.faiss", "problem": "missing", "repair": "rebuild it", '
        '"repaired": true}, {"file": "manifest.json", "problem": "differs", "repair": '
        '"rewrite it", "repaired": false}], "missing_files": {"count": 3, "examples": '
        '["/gone/\\udcfe.jpg"]}}',
    ),
    (
        CheckReport("/idx", 10, 0, 7, (FIXED,)),
        '{"index": "/idx", "ok": true, "images": 10, "failed": 0, "generation": 7, "problems": '
        '[{"file": "vectors.faiss", "problem": "missing", "repair": "rebuild it", "repaired": '
        'true}], "missing_files": {"count": 0, "examples": []}}',
    ),
    (PruneReport(), '{"dry_run": false, "removed": 0, "paths": [], "forgotten_roots": []}'),
    (
        PruneReport([b"/a.jpg", b"/\xff.png"], [b"/old"], True, False),
        '{"dry_run": true, "removed": 2, "paths": ["/a.jpg", "/\\udcff.png"], '
        '"forgotten_roots": ["/old"]}',
    ),
    (
        QueryResult("q", [Neighbour(3, b"/a/\xff.jpg", 0.123456789)]),
        '{"query": "q", "results": [{"id": 3, "path": "/a/\\udcff.jpg", "score": 0.123457}]}',
    ),
    (QueryResult("q", [], "cannot"), '{"query": "q", "results": [], "error": "cannot"}'),
]


@pytest.mark.parametrize(("report", "expected"), CASES, ids=lambda c: type(c).__name__)
def test_report_json_is_unchanged(report: JsonReport, expected: str) -> None:
    assert json.dumps(report.to_dict()) == expected


@dataclass(frozen=True)
class _Example(JsonReport):
    name: bytes
    parts: tuple[int, ...]
    seconds: float = json_field(json=rounded(1))
    hidden: str = json_field("x", json=SKIP)
    renamed: int = json_field(0, key=lambda r: f"n_{len(r.parts)}")
    maybe: str | None = json_field(None, omit_none=True)
    both: int = json_field(1, keys=lambda r: {"a": r.both, "b": r.both * 2})


def test_field_options() -> None:
    assert _Example(b"/\xff", (1, 2), 1.26).to_dict() == {
        "name": "/\udcff",
        "parts": [1, 2],
        "seconds": 1.3,
        "n_2": 0,
        "a": 1,
        "b": 2,
    }
    assert _Example(b"", (), 0.0, maybe="here").to_dict()["maybe"] == "here"
