"""The manifest: how an index was built, checked on every open.

It lives in the catalogue (the source of truth) and is mirrored to `manifest.json` for people
and other tools; a missing or damaged mirror is rewritten from the catalogue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import IndexIncompatible
from ..specs import ModelInfo, Preprocess, WeightsSpec

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """What an index holds: the model that made its vectors and how they are stored."""

    model: ModelInfo
    precision: str
    metric: str = "inner_product"
    vector_dtype: str = "float32"
    index_type: str = "flat"
    index_params: dict[str, Any] = field(default_factory=dict)
    #: How the type is chosen: {"requested": "auto" | a type, "memory_bytes": int | None}.
    index_policy: dict[str, Any] = field(default_factory=dict)
    #: PCA reduction of the cache: {} (none), {"dim", "whiten"} (asked for, not yet learned:
    #: too few vectors) or, once learned, also {"from_dim", "trained_on", "sha256", ...}.
    reduction: dict[str, Any] = field(default_factory=dict)
    #: Candidates fetched per result and re-scored with the catalogue's full vectors;
    #: None: the default for the layout (see `rerank_factor`).
    rerank: int | None = None
    #: Where the search index lives: {} (vectors.faiss beside the catalogue) or
    #: {"kind": "milvus", "uri": URI} (a Milvus collection; see `store.milvus`).
    vectors: dict[str, Any] = field(default_factory=dict)
    created_with: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def reduced(self) -> bool:
        """Whether a learned reduction shapes the cache (its vectors are `cache_dim`-d)."""
        return "sha256" in self.reduction

    @property
    def cache_dim(self) -> int:
        """The dimension of the vectors in the FAISS cache."""
        return int(self.reduction["dim"]) if self.reduced else self.model.dim

    def with_index(self, index_type: str, params: dict[str, Any]) -> Manifest:
        return replace(self, index_type=index_type, index_params=dict(params))

    def portable(self) -> Manifest:
        """The manifest an export carries: without `vectors` (a Milvus URI names this
        machine's collection; an import makes its own search index)."""
        return replace(self, vectors={})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "model": self.model.name,
            "weights": self.model.weights.to_dict(),
            "preprocess": {
                "height": self.model.preprocess.height,
                "width": self.model.preprocess.width,
                "resize": self.model.preprocess.resize,
                "interpolation": self.model.preprocess.interpolation,
                "mean": list(self.model.preprocess.mean),
                "std": list(self.model.preprocess.std),
            },
            "dim": self.model.dim,
            "metric": self.metric,
            "normalized": True,
            "precision": self.precision,
            "vector_dtype": self.vector_dtype,
            "index_type": self.index_type,
            "index_params": self.index_params,
            "index_policy": self.index_policy,
            "created_with": self.created_with,
        }
        # Written only when set, so the manifests of indexes made before these existed
        # read back unchanged.
        if self.reduction:
            out["reduction"] = self.reduction
        if self.rerank is not None:
            out["rerank"] = self.rerank
        if self.vectors:
            out["vectors"] = self.vectors
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        version = int(data.get("schema_version", 0))
        if version != SCHEMA_VERSION:
            raise IndexIncompatible(
                f"this index has schema version {version}, but this retrieval reads version "
                f"{SCHEMA_VERSION}; rebuild it with `retrieval index --index DIR FOLDER`"
            )
        model = ModelInfo(
            str(data["model"]),
            WeightsSpec.from_dict(data["weights"]),
            Preprocess.from_dict(data["preprocess"]),
            int(data["dim"]),
        )
        return cls(
            model=model,
            precision=str(data.get("precision", "fp32")),
            metric=str(data.get("metric", "inner_product")),
            vector_dtype=str(data.get("vector_dtype", "float32")),
            index_type=str(data.get("index_type", "flat")),
            index_params=dict(data.get("index_params") or {}),
            index_policy=dict(data.get("index_policy") or {}),
            reduction=dict(data.get("reduction") or {}),
            rerank=None if data.get("rerank") is None else int(data["rerank"]),
            vectors=dict(data.get("vectors") or {}),
            created_with=dict(data.get("created_with") or {}),
            schema_version=version,
        )


def check_model(
    manifest: Manifest, model: str | None, weights: WeightsSpec | None, directory: str
) -> None:
    """Refuse to add to (or search) an index with a different model or weights."""
    built = manifest.model
    rebuild = (
        "build a new index for it: `retrieval index --index NEW_DIR FOLDER` "
        f"(or delete {directory})"
    )
    if model is not None and model != built.name:
        raise IndexIncompatible(
            f"the index at {directory} was built with {built.name} "
            f"({built.weights.describe()}), not {model}; leave out --model to use "
            f"{built.name}, or {rebuild}"
        )
    if weights is None:
        return
    same = weights.source == built.weights.source and (
        weights.source == "pretrained"
        or (weights.source == "file" and weights.path == built.weights.path)
        or (weights.source == "untrained" and weights.identity == built.weights.identity)
    )
    if not same:
        raise IndexIncompatible(
            f"the index at {directory} was built with {built.name} {built.weights.describe()}, "
            f"not {weights.describe()}; leave out the weights options to reuse them, or {rebuild}"
        )
