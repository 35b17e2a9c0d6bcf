"""The storage policy: what a user asks for (`StorageOptions`) applied to an index's manifest.

This is where `index_type`, `memory`, `vector_dtype`, `dim`, `whiten` and `rerank` are
checked and recorded (`manifest.index_policy`, `vector_dtype`, `reduction`, `rerank`).
Which concrete type `auto` picks for n vectors and a memory budget is the store's
arithmetic (`store.vectors.choose`, via `store.index_dir.choose_layout`): the store
re-chooses as the collection grows (`IndexDir` relayout), `ops.ann.optimize` on request.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from .. import defaults
from ..errors import IndexIncompatible, UsageError
from ..specs import StorageOptions
from ..store import milvus_spec
from ..store.manifest import Manifest

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """'4G', '512M', '1.5GiB', '1000000' -> bytes (binary units); raises UsageError."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"cannot read the size {text!r}; write it like 512M, 4G or 1.5GB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def configure(
    manifest: Manifest,
    directory: str,
    storage: StorageOptions | None = None,
    new: bool = False,
) -> Manifest:
    """`manifest` with the `storage` options applied (None fields: keep what it has).

    A new index starts under the `auto` policy. The vector dtype and the PCA reduction
    (`dim`; plain PCA unless `whiten=True`) are fixed at creation; `rerank` (candidates
    re-scored per result, 0: off) may change at any time. Raises UsageError for a bad
    value, IndexIncompatible for a change only a new index can make.
    """
    storage = storage or StorageOptions()
    manifest = _reduction_options(manifest, directory, storage, new)
    manifest = _vectors_option(manifest, directory, storage.vectors, new)
    if not new and not storage.changes_layout:
        return manifest
    index_type, vector_dtype = storage.index_type, storage.vector_dtype
    _check_choice("index type", index_type, defaults.INDEX_TYPES)
    _check_choice("vector dtype", vector_dtype, defaults.VECTOR_DTYPES)
    if new:
        manifest = replace(manifest, vector_dtype=vector_dtype or "float32")
        index_type = index_type or "auto"
    elif vector_dtype is not None and vector_dtype != manifest.vector_dtype:
        raise IndexIncompatible(
            f"the index at {directory} stores {manifest.vector_dtype} vectors, not "
            f"{vector_dtype}; copy it into a new index instead: `retrieval export --index "
            f"{directory} -o all.parquet` then `retrieval import all.parquet --index NEW_DIR "
            f"--vector-dtype {vector_dtype}`"
        )
    return _apply_policy(manifest, index_type, storage.memory, new)


def _vectors_option(manifest: Manifest, directory: str, asked: str | None, new: bool) -> Manifest:
    """`manifest` with its search index's home (`--vectors faiss | milvus:URI`) set: a new
    index takes the one asked (faiss when none); an existing one keeps its own."""
    wanted = milvus_spec.parse(asked, directory) if asked is not None else None
    if new:
        if wanted and manifest.reduction:
            raise UsageError("--dim (a PCA reduction) does not go with --vectors milvus")
        if wanted and not wanted["uri"].endswith(".db"):
            from ..store import milvus  # pymilvus: only for a Milvus index

            milvus.probe(wanted["uri"])
        return replace(manifest, vectors=wanted or {})
    if wanted is not None and _home(wanted, directory) != _home(manifest.vectors, directory):
        have = f"milvus:{manifest.vectors['uri']}" if manifest.vectors else "faiss"
        raise IndexIncompatible(
            f"the index at {directory} keeps its vectors in {have}; --vectors is fixed when an "
            f"index is made, so copy it into a new one: `retrieval export --index {directory} "
            f"-o all.parquet` then `retrieval import all.parquet --index NEW_DIR --vectors "
            f"{asked}`"
        )
    return manifest


def _home(vectors: dict[str, Any], directory: str) -> str:
    """Where a manifest's `vectors` entry puts the search index, as one comparable string."""
    return milvus_spec.resolve(str(vectors["uri"]), directory) if vectors else "faiss"


def _check_choice(what: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise UsageError(f"unknown {what} {value!r}; use one of {', '.join(choices)}")


def _apply_policy(
    manifest: Manifest, index_type: str | None, memory: int | None, new: bool
) -> Manifest:
    """Record the requested type and budget; a concrete type is kept while it still fits the
    request (auto keeps what the store chose; the store re-chooses with the real size)."""
    policy = dict(manifest.index_policy) or {"requested": manifest.index_type}
    if index_type is not None:
        policy["requested"] = index_type
    if memory is not None:
        policy["memory_bytes"] = int(memory)
    policy.setdefault("memory_bytes", None)
    if policy == manifest.index_policy:
        return manifest
    requested = policy["requested"]
    if requested == "auto":
        chosen, params = manifest.index_type, dict(manifest.index_params)
        if new:
            chosen, params = "flat", {}  # re-chosen for the real size when vectors arrive
    elif requested == manifest.index_type and not new:
        chosen, params = requested, dict(manifest.index_params)
    else:
        chosen, params = requested, {}
    return replace(manifest, index_type=chosen, index_params=params, index_policy=policy)


def _reduction_options(
    manifest: Manifest, directory: str, storage: StorageOptions, new: bool
) -> Manifest:
    """`manifest` with `dim`, `whiten` and `rerank` checked and applied."""
    dim, whiten, rerank = storage.dim, storage.whiten, storage.rerank
    if rerank is not None:
        if rerank < 0:
            raise UsageError(f"--rerank must be 0 (off) or a positive factor, not {rerank}")
        manifest = replace(manifest, rerank=int(rerank))
    elif new:
        manifest = replace(manifest, rerank=None)
    if dim is not None and not 0 < dim < manifest.dim:
        raise UsageError(
            f"--dim must be between 1 and {manifest.dim - 1} for {manifest.model.name}'s "
            f"{manifest.dim}-d vectors, not {dim}"
        )
    if whiten is not None and dim is None and not (manifest.reduction and not new):
        raise UsageError("--whiten/--no-whiten go with --dim N (a PCA reduction)")
    if new:
        wanted = {} if dim is None else {"dim": int(dim), "whiten": bool(whiten)}
        return replace(manifest, reduction=wanted)
    have_dim = manifest.reduction.get("dim")
    have_whiten = manifest.reduction.get("whiten", False)
    same = dim in (None, have_dim) and whiten in (None, have_whiten)
    if (dim is not None or whiten is not None) and not (manifest.reduction and same):
        have = (
            f"a PCA reduction to {manifest.reduction['dim']} dimensions"
            f"{' (whitened)' if manifest.reduction.get('whiten') else ''}"
            if manifest.reduction
            else "full vectors"
        )
        raise IndexIncompatible(
            f"the index at {directory} was made with {have}; a reduction is fixed when an index "
            f"is made, so copy it into a new one: `retrieval export --index {directory} -o "
            f"all.parquet` then `retrieval import all.parquet --index NEW_DIR --dim N`"
        )
    return manifest
