"""What a library user imports from `retrieval`: every public name, lazily."""

from __future__ import annotations

import inspect
import json
import pickle
import subprocess
import sys

import pytest

import retrieval
from retrieval import errors
from retrieval.specs import StorageOptions, WeightsSpec

#: The types a user of `Index` meets in its signatures and results.
NEEDED = (
    "Index",
    "WeightsSpec",
    "IndexOptions",
    "IndexReport",
    "SearchFilter",
    "QueryResult",
    "Hit",
    "Manifest",
    "ExportReport",
    "ImportReport",
    "CheckReport",
    "OptimizeReport",
    "RecallReport",
    "errors",
    "RetrievalError",
)


def test_every_needed_name_is_public() -> None:
    assert set(NEEDED) <= set(retrieval.__all__)


@pytest.mark.parametrize("name", retrieval.__all__)
def test_every_name_in_all_resolves(name: str) -> None:
    assert getattr(retrieval, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from retrieval import {name}", namespace)  # noqa: S102 - the import form users write
    assert namespace[name] is getattr(retrieval, name)


def test_every_error_class_is_public() -> None:
    classes = [v for v in vars(errors).values() if isinstance(v, type)]
    error_classes = {c.__name__ for c in classes if issubclass(c, errors.RetrievalError)}
    assert error_classes <= set(retrieval.__all__)
    assert retrieval.errors is errors


def test_every_error_pickles_with_its_message_and_attributes() -> None:
    """A Ray actor's model error (WeightsUnavailable, ...) reaches the driver pickled;
    Exception's own pickling would call the constructor with the message alone."""
    classes = [v for v in vars(errors).values() if isinstance(v, type)]
    for cls in (c for c in classes if issubclass(c, errors.RetrievalError)):
        required = [
            p
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.default is inspect.Parameter.empty
        ]
        error = cls(*(f"{p.name}-value" for p in required)) if required else cls("why")
        error.note = 3  # an attribute set after construction survives too
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is cls
        assert (str(copy), copy.args) == (str(error), error.args)
        assert vars(copy) == vars(error)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'retrieval' has no attribute 'Nope'"):
        retrieval.Nope  # noqa: B018


def test_import_retrieval_loads_no_heavy_dependency() -> None:
    code = (
        "import json, sys, retrieval; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('torch', 'faiss', 'sqlalchemy', 'timm', 'numpy', 'PIL'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == []


def test_untrained_weights_show_their_seed() -> None:
    spec = WeightsSpec("untrained")
    assert spec.identity == "0"
    assert spec.describe() == "untrained (seed 0)"
    assert spec == WeightsSpec("untrained", identity="0")
    assert WeightsSpec("untrained", identity="3").describe() == "untrained (seed 3)"


def test_the_reduction_is_plain_pca_unless_whiten_is_asked_for(tmp_path) -> None:
    from test_ann import synthetic_manifest

    from retrieval.ops.storage import configure

    made = configure(synthetic_manifest(), str(tmp_path), StorageOptions(dim=8), new=True)
    assert made.reduction == {"dim": 8, "whiten": False}
    asked = StorageOptions(dim=8, whiten=True)
    whitened = configure(synthetic_manifest(), str(tmp_path), asked, new=True)
    assert whitened.reduction == {"dim": 8, "whiten": True}
    # ... and the docstrings a library user reads say so
    for method in (retrieval.Index.add, retrieval.Index.import_files, configure):
        doc = " ".join((method.__doc__ or "").split())
        assert "plain PCA unless `whiten=True`" in doc, method.__qualname__
        assert "whitened, the default" not in doc


def test_the_cli_loads_no_heavy_dependency_for_help() -> None:
    """`retrieval --help` stays fast (< 0.3 s): importing every command module loads none of
    the heavy libraries, nor the web or engine code (a module-level `from .. import Index` in
    cli/serve.py once pulled SQLAlchemy in and made --help 0.48 s)."""
    heavy = ("torch", "faiss", "sqlalchemy", "timm", "numpy", "PIL", "fastapi", "ray", "pymilvus")
    code = (
        "import json, sys, retrieval.cli; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == []
