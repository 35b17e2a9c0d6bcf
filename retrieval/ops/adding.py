"""Adding images to an index, the use case behind `Index.add`: choose the model (the one
the index was built with, loaded on first need; or a new one, loaded before anything is
written, here or, with an engine, by its workers, which describe it), record the manifest and
its storage options, then index the paths.

`Index.add` holds the writer lock and relays notices; `indexing.index_paths` does the work.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from typing import Any

from .. import defaults
from .._version import __version__
from ..errors import UsageError
from ..pathnames import display
from ..specs import StorageOptions, WeightsSpec
from ..store.index_dir import IndexDir
from ..store.manifest import Manifest, check_model
from . import embedders, indexing, storage
from .indexing import Engine, IndexOptions, ModelRequest

Notify = Callable[[str], None]


def embedder_for(
    existing: Manifest | None,
    directory: str,
    *,
    model: str | None,
    weights: WeightsSpec | None,
    device: str,
    precision: str,
    options: IndexOptions | None,
    notify: Notify,
    engine: Engine | None = None,
) -> Any:
    """The model to embed with: an existing index's own (checked against `model` and
    `weights`, loaded on the first file that needs embedding: an unchanged tree never pays),
    else a new one, loaded now, so that a model error leaves no half-made index behind;
    with an `engine`, a new index's model as the engine's workers loaded it (`EngineModel`:
    this process never loads it)."""
    if existing is not None:
        check_model(existing, model, weights, directory)
        return embedders.LazyEmbedder(
            existing.model.preprocess,
            lambda: embedders.resolve_device(device),
            lambda: _announced(embedders.load_for(existing, device, precision), options, notify),
        )
    if engine is not None:
        return engine.model()  # the engine says what runs where
    name, spec = model or defaults.MODEL, weights or WeightsSpec("pretrained")
    return _announced(embedders.load(name, spec, device, precision), options, notify)


def model_request(
    existing: Manifest | None, directory: str, model: str | None, weights: WeightsSpec | None
) -> ModelRequest:
    """What an engine's workers are to load: the existing index's own model (raises
    IndexIncompatible when `model` or `weights` ask for another one), else `model`
    [resnet50] with `weights` [pretrained]."""
    if existing is not None:
        check_model(existing, model, weights, directory)
        return ModelRequest(existing.model.name, existing.model.weights, existing)
    return ModelRequest(model or defaults.MODEL, weights or WeightsSpec("pretrained"))


def _announced(embedder: Any, options: IndexOptions | None, notify: Notify) -> Any:
    """`embedder`, with torch's threads set to the plan, after saying what runs where."""
    embedders.configure_threads(embedder.device, options)
    notify(f"embedding with {embedder.info.name} on {embedder.describe()}")
    return embedder


def planned_manifest(
    existing: Manifest | None, embedder: Any, asked: StorageOptions | None, directory: str
) -> Manifest:
    """The manifest `add` will record: the index's own, or a new one from the embedder, with
    `asked` applied. Pure, so `add` calls it before opening anything for writing: a bad
    option (UsageError, IndexIncompatible) then leaves no half-made index behind."""
    if existing is not None:
        return storage.configure(existing, directory, asked)
    new = Manifest(model=embedder.info, precision=embedder.precision, created_with=versions())
    return storage.configure(new, directory, asked, new=True)


def set_manifest(
    index_dir: IndexDir,
    existing: Manifest | None,
    planned: Manifest,
    asked: StorageOptions | None,
) -> None:
    """Record `planned` (see `planned_manifest`) for a new index, or apply `asked` to the
    index's own; `index_dir` is open for writing. `existing` is the manifest seen before the
    lock was taken: another process may have created (or removed) the index meanwhile."""
    directory = index_dir.directory
    wanted = planned.model
    if index_dir.manifest is None:
        if existing is not None:  # removed meanwhile: made anew, as a new index
            planned = storage.configure(existing, directory, asked, new=True)
        index_dir.set_manifest(planned)
        return
    if index_dir.manifest.model != wanted:
        # another process created or rebuilt the index meanwhile
        check_model(index_dir.manifest, wanted.name, wanted.weights, directory)
    current = index_dir.require_manifest()
    configured = storage.configure(current, directory, asked)
    if configured != current:
        index_dir.set_manifest(configured)


def remembered_roots(index_dir: IndexDir, notify: Notify) -> list[str]:
    """The roots `add` with no paths re-scans: those still on disk (the gone ones are
    announced and skipped); raises UsageError when there are none to scan."""
    remembered = index_dir.catalog.remembered_roots()
    if not remembered:
        raise UsageError(
            f"the index at {index_dir.directory} remembers no folders (it was built before "
            f"folders were recorded); name them once: `retrieval index --index "
            f"{index_dir.directory} FOLDER...`"
        )
    present, gone = indexing.split_roots(remembered)
    for root in gone:
        notify(
            f"{display(root)} no longer exists: skipped; its images stay in the index "
            "until `retrieval prune` drops them"
        )
    if not present:
        raise UsageError(
            f"none of the {len(gone)} folder(s) this index remembers exists any more; "
            "`retrieval prune` forgets them and drops their images, or name a folder: "
            "`retrieval index FOLDER...`"
        )
    shown = ", ".join(display(root) for root in present)
    notify(f"re-scanning {len(present)} remembered root(s): {shown}")
    return [os.fsdecode(root) for root in present]


def versions() -> dict[str, str]:
    """What made an index: retrieval, torch, timm and Python versions.

    Package metadata, not `import torch`: `retrieval import` records versions too and
    needs no model (importing torch costs seconds).
    """
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        module = sys.modules.get(name)  # loaded already: its own string (e.g. "+cu130")
        if module is not None:
            return str(module.__version__)
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {
        "retrieval": __version__,
        "torch": installed("torch"),
        "timm": installed("timm"),
        "python": platform.python_version(),
    }


def check_workers(options: IndexOptions | None, notify: Notify) -> None:
    """Say so when --workers asks for more processes than this machine runs; refuse, before
    anything is written, a count the open-files limit cannot hold."""
    from . import pipeline, workers

    asked = options.workers if options is not None else None
    notice = pipeline.workers_notice(asked)
    if notice:
        notify(notice)
    if asked:
        workers.check_open_files(min(asked, pipeline.max_workers()))
