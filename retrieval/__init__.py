"""retrieval: index folders of images with a timm ResNet and FAISS, search by example image,
export the embeddings. `Index` is the library API; `retrieval` on the command line is a thin
layer over it.

Every type a library user meets is importable from here (`from retrieval import Index,
WeightsSpec, StorageOptions, IndexOptions, SearchFilter`), as are the error classes of
`retrieval.errors`, the choices every face offers (DEVICES, PRECISIONS, INDEX_TYPES, ...;
all defaults are in `retrieval.defaults`) and the helpers the CLI uses (parse_size,
printable, display, run_bench). This is all the CLI imports of the library. The names are
resolved on first use, so `import retrieval` loads no torch, FAISS or SQLAlchemy (and
`retrieval --help` stays fast).
"""

from __future__ import annotations

import importlib

from . import defaults, errors  # noqa: E402 - light: the standard library only
from ._version import __version__
from .defaults import (  # noqa: E402 - the choices every face offers, and optimize's targets
    DEVICES,
    ENGINES,
    EXPORT_FORMATS,
    INDEX_TYPES,
    PRECISIONS,
    RECALL_QUERIES,
    TARGET_RECALL,
    VECTOR_DTYPES,
)
from .errors import (  # noqa: E402
    BadImage,
    CatalogCorrupt,
    CatalogTampered,
    CopiedIndex,
    EngineFailed,
    ImportFormatError,
    IndexBusy,
    IndexIncompatible,
    IndexNotFound,
    Interrupted,
    ModelError,
    NotFound,
    QueryImageError,
    ReadOnlyIndex,
    RetrievalError,
    StorageError,
    UnsafeIndexFile,
    UsageError,
    WeightsMismatch,
    WeightsUnavailable,
    WorkersUnavailable,
)
from .specs import (  # noqa: E402 - light
    EngineOptions,
    ModelInfo,
    Preprocess,
    StorageOptions,
    WeightsSpec,
)

#: Public name -> (module under retrieval, its name there), imported on first access.
_LAZY = {
    "Index": ("api", "Index"),
    "IndexOptions": ("ops.indexing", "IndexOptions"),
    "IndexReport": ("ops.indexing", "IndexReport"),
    "SearchFilter": ("ops.searching", "SearchFilter"),
    "QueryResult": ("ops.searching", "QueryResult"),
    "Hit": ("store.index_dir", "Neighbour"),  # one search result: id, path (bytes), score
    "Manifest": ("store.manifest", "Manifest"),
    "ExportReport": ("ops.exchange", "ExportReport"),
    "LayoutOptions": ("ops.exchange", "LayoutOptions"),  # export --layout clip-retrieval
    "ShardWriter": ("ops.layout", "ShardWriter"),  # writes the clip-retrieval layout
    "ImportReport": ("ops.importing", "ImportReport"),
    "CheckReport": ("ops.checking", "CheckReport"),
    "PruneReport": ("ops.pruning", "PruneReport"),
    "OptimizeReport": ("ops.ann", "OptimizeReport"),
    "MovePlan": ("ops.dups_apply", "MovePlan"),  # dups --apply: groups of keep/move members
    "MoveGroup": ("ops.dups_apply", "MoveGroup"),
    "MoveMember": ("ops.dups_apply", "MoveMember"),
    "ApplyReport": ("ops.dups_apply", "ApplyReport"),
    "plan_from_report": ("ops.dups_apply", "plan_from_report"),
    "RecallReport": ("ops.ann", "RecallReport"),
    "DupsReport": ("ops.dups", "DupsReport"),  # what `dups` found: groups of near-duplicates
    "DupGroup": ("ops.dups", "DupGroup"),
    "DupMember": ("ops.dups", "DupMember"),
    "dups_csv_rows": ("ops.dups_output", "csv_rows"),  # a DupsReport as CSV rows
    "dups_html": ("ops.dups_output", "render_html"),  # a DupsReport as one HTML page
    "QueryStream": ("ops.searching", "QueryStream"),  # a query image read from a stream
    "Query": ("ops.searching", "Query"),  # an embedded query image: vector, or its error
    "ImageRecord": ("ops.images", "ImageRecord"),  # one indexed image: path, size, pixels...
    "Failure": (
        "ops.images",
        "Failure",
    ),  # one file that could not be indexed, and why  # a query image read from a stream
    "parse_size": ("ops.storage", "parse_size"),  # '4G' -> bytes, for memory budgets
    "BenchOptions": ("ops.bench", "BenchOptions"),
    "BenchReport": ("ops.bench_report", "BenchReport"),
    "run_bench": ("ops.bench", "run_bench"),
    "evaluate": ("toolbox", "evaluate"),  # labelled folders -> retrieval (and duplicate) scores
    "EvaluationReport": ("ops.evaluating", "EvaluationReport"),
    "convert_weights": ("toolbox", "convert_weights"),  # other key names -> timm safetensors
    "ConvertReport": ("ops.converting", "ConvertReport"),
    "printable": ("pathnames", "printable"),  # any text, terminal controls escaped
    "display": ("pathnames", "display"),  # a stored (bytes) path for people
}

__all__ = [
    "__version__",
    "errors",
    "defaults",
    "DEVICES",
    "ENGINES",
    "PRECISIONS",
    "INDEX_TYPES",
    "VECTOR_DTYPES",
    "EXPORT_FORMATS",
    "TARGET_RECALL",
    "RECALL_QUERIES",
    "EngineOptions",
    "ModelInfo",
    "Preprocess",
    "StorageOptions",
    "WeightsSpec",
    *_LAZY,
    "RetrievalError",
    "UsageError",
    "IndexNotFound",
    "NotFound",
    "IndexBusy",
    "IndexIncompatible",
    "CatalogCorrupt",
    "CatalogTampered",
    "UnsafeIndexFile",
    "StorageError",
    "ReadOnlyIndex",
    "CopiedIndex",
    "ModelError",
    "WeightsUnavailable",
    "WeightsMismatch",
    "BadImage",
    "QueryImageError",
    "ImportFormatError",
    "Interrupted",
    "WorkersUnavailable",
    "EngineFailed",
]


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(f".{module}", __name__), attribute)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
