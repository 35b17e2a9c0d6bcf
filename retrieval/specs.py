"""The small frozen records that travel between layers (and into the manifest).

Torch-free, FAISS-free and SQL-free, so every layer may import them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from . import defaults


@dataclass(frozen=True)
class Preprocess:
    """How pixels are prepared for the model (from timm's data config).

    The shorter side is resized to `resize` pixels with `interpolation`, then the centre
    `height` x `width` is cropped; `mean`/`std` (0..1 scale, RGB) normalise in the model.
    """

    height: int
    width: int
    resize: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        return cls(
            int(data["height"]),
            int(data["width"]),
            int(data["resize"]),
            str(data["interpolation"]),
            tuple(data["mean"]),  # type: ignore[arg-type]
            tuple(data["std"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class WeightsSpec:
    """Where a backbone's weights come from; `identity` pins them exactly.

    `source` is "pretrained" (identity: hub id @ snapshot revision; `sha256`: the SHA-256
    of the cached weights file, verified whenever they are loaded again; None in manifests
    written before it was recorded, which are then not verified), "file" (`path`, identity:
    its SHA-256) or "untrained" (identity: the seed; `WeightsSpec("untrained")` is seed
    `defaults.UNTRAINED_SEED`, 0).
    """

    source: str
    path: str | None = None
    identity: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.source == "untrained" and self.identity is None:
            object.__setattr__(self, "identity", str(defaults.UNTRAINED_SEED))

    def describe(self) -> str:
        """One line for people, e.g. 'pretrained (timm/resnet50.a1_in1k@abc123)'."""
        if self.source == "file":
            return f"file {self.path} (sha256 {str(self.identity)[:12]})"
        if self.source == "untrained":
            return f"untrained (seed {self.identity})"
        return f"pretrained ({self.identity or 'timm default tag'})"

    @property
    def pretrained(self) -> bool:
        return self.source != "untrained"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["sha256"] is None:
            del data["sha256"]  # file and untrained weights: manifests stay as they were
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightsSpec:
        return cls(str(data["source"]), data.get("path"), data.get("identity"), data.get("sha256"))


@dataclass(frozen=True)
class ModelInfo:
    """A backbone as the manifest records it: name, exact weights, preprocessing, dim."""

    name: str
    weights: WeightsSpec
    preprocess: Preprocess
    dim: int


@dataclass(frozen=True)
class StorageOptions:
    """How an index stores and searches its vectors (`Index.add`, `Index.import_files`).

    None keeps what the index has; a new index then gets the default (in brackets).
    """

    #: "auto", "flat", "hnsw", "ivf" or "ivfpq" (`defaults.INDEX_TYPES`) [auto: chosen
    #: from the number of vectors, their dimension and `memory`].
    index_type: str | None = None
    #: Memory budget for `auto`, bytes [the index's recorded budget, else half the RAM].
    memory: int | None = None
    #: "float32" or "float16" (half the memory); new indexes only [float32].
    vector_dtype: str | None = None
    #: New indexes only: search a PCA reduction of the vectors to this many dimensions
    #: (the full vectors stay stored) [none].
    dim: int | None = None
    #: With `dim`: whiten the PCA components; plain PCA unless `whiten=True` (whitening
    #: lowered recall@10 in our benchmark) [False].
    whiten: bool | None = None
    #: Candidates per result re-scored with the full vectors; 0: off; may change at any
    #: time [32 for IVF-PQ, 8 with `dim`, else 0].
    rerank: int | None = None
    #: New indexes only: where the search index lives, "faiss" (vectors.faiss) or
    #: "milvus:URI" (a Milvus collection: a Milvus Lite .db file or http://HOST:19530) [faiss].
    vectors: str | None = None

    @property
    def changes_layout(self) -> bool:
        """Whether an existing index's type, budget or dtype is asked to change."""
        return (self.index_type, self.memory, self.vector_dtype) != (None, None, None)


@dataclass(frozen=True)
class EngineOptions:
    """Where `Index.add` decodes and embeds the files it must embed (`defaults.ENGINES`).

    "local": this process and its decode workers. "ray": a Ray cluster (the `ray` extra);
    the catalogue is still written here, batch by batch.
    """

    kind: str = "local"
    #: Ray: None starts Ray on this machine (loopback only); "auto", "HOST:PORT" (the
    #: cluster's GCS) or "ray://HOST:PORT" (its Ray Client server) joins a running cluster.
    address: str | None = None
    #: Ray: embedding actors [one per GPU of the cluster, else 1].
    actors: int | None = None
    #: Ray: write the embedded files to this new folder in the clip-retrieval layout (for
    #: `retrieval import DIR` elsewhere) instead of this index's catalogue [None].
    shards: str | None = None
