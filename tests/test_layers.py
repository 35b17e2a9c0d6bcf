"""The layers, checked from the source: who may import what (see docs/ARCHITECTURE.md).

    cli, web -> retrieval (public names) -> api -> (engines ->) ops -> store / embedding / sources
        -> specs / errors / defaults / pathnames / _version

The two faces, cli/ and web/, import only `retrieval`'s public names, their own framework
and the standard library; `retrieval serve` (cli/serve.py) is the one place the CLI starts
the web face.

Every import statement counts, deferred ones inside functions too. The heavy dependencies
each have one home, so that a face (CLI, web app, engine) never meets FAISS, SQL or torch.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import retrieval

PACKAGE = Path(retrieval.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))

#: Third-party package -> the modules (paths under retrieval/, as prefixes) allowed to
#: import it. The store split may add modules (e.g. store/catalog_*.py): prefixes allow it.
HOMES = {
    "sqlalchemy": ("store/catalog",),
    "faiss": ("store/vectors",),
    "torch": ("embedding/",),
    "timm": ("embedding/",),
    "torchvision": ("embedding/",),
    "PIL": ("sources/",),
    "fastapi": ("web/",),
    "starlette": ("web/",),
    "uvicorn": ("web/",),
    "jinja2": ("web/",),
    # a Milvus collection as the search index (`--vectors milvus:URI`): one module
    "pymilvus": ("store/milvus_collection.py",),
    "milvus": (),  # PyPI's `milvus` (a Milvus server binary): the tests start one, never us
    "ray": ("engines/ray_engine.py",),  # optional: the `ray` extra, for --engine ray
}
#: Known exceptions still to move, with the reason; an entry that no longer applies fails
#: `test_known_exceptions_are_still_needed`, so the list only shrinks.
KNOWN: set[tuple[str, str]] = set()
#: Packages of retrieval a lower layer must not import (dependencies point down).
#: Every layer above the records, which none of the records may import.
ABOVE_RECORDS = ("api", "toolbox", "cli", "web", "ops", "engines", "store", "embedding", "sources")
UPWARD = {
    "store/": ("api", "toolbox", "cli", "web", "ops", "engines", "embedding", "sources"),
    "embedding/": ("api", "toolbox", "cli", "web", "ops", "engines", "store"),
    "sources/": ("api", "toolbox", "cli", "web", "ops", "engines", "store", "embedding"),
    "ops/": ("api", "toolbox", "cli", "web", "engines"),
    "engines/": ("api", "toolbox", "cli", "web"),
    "api.py": ("cli", "web"),
    "toolbox.py": ("cli", "web"),
    "specs.py": ABOVE_RECORDS,
    "errors.py": ABOVE_RECORDS,
    "defaults.py": ABOVE_RECORDS,
    "_version.py": ABOVE_RECORDS,
    "web/": ("cli",),
}
#: What the CLI may use besides `retrieval`'s public names, click and the standard library:
#: tqdm draws its progress bar (presentation, like click).
CLI_THIRD_PARTY = {"click", "tqdm"}
#: The web face's framework: FastAPI on Starlette, Jinja2 templates, uvicorn to serve.
WEB_THIRD_PARTY = {"fastapi", "starlette", "jinja2", "uvicorn"}
#: The one CLI module that starts the web face (and may import `retrieval.web`).
CLI_STARTS_WEB = "cli/serve.py"


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module name, names imported from it) for every import in `path`."""
    package = ["retrieval", *_rel(path).split("/")[:-1]]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((module, [alias.name for alias in node.names]))
    return found


def _retrieval_modules(path: Path) -> set[str]:
    """The retrieval modules `path` imports (from `pkg import mod` counted as pkg.mod)."""
    out = set()
    for module, names in _imports(path):
        if module.split(".")[0] != "retrieval":
            continue
        out.add(module)
        out.update(f"{module}.{name}" for name in names)
    return out


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("cli/*.py")), ids=_rel)
def test_the_cli_imports_only_retrieval_click_and_the_standard_library(path: Path) -> None:
    public = set(retrieval.__all__)
    bad = []
    for module, names in _imports(path):
        top = module.split(".")[0]
        if module == "retrieval":
            bad += [f"retrieval.{name}" for name in names if name not in public]
        elif module.startswith("retrieval.cli"):
            continue  # its own modules
        elif module.startswith("retrieval.web") and _rel(path) == CLI_STARTS_WEB:
            continue
        elif top == "retrieval":
            bad.append(module)  # a library module, not a public name
        elif top not in sys.stdlib_module_names and top not in CLI_THIRD_PARTY:
            bad.append(module)
    assert bad == []


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("web/*.py")), ids=_rel)
def test_the_web_app_imports_only_retrieval_its_framework_and_the_standard_library(
    path: Path,
) -> None:
    public = set(retrieval.__all__)
    bad = []
    for module, names in _imports(path):
        top = module.split(".")[0]
        if module == "retrieval":
            bad += [f"retrieval.{name}" for name in names if name not in public]
        elif module.startswith("retrieval.web"):
            continue  # its own modules
        elif top == "retrieval":
            bad.append(module)
        elif top not in sys.stdlib_module_names and top not in WEB_THIRD_PARTY:
            bad.append(module)
    assert bad == []


def test_the_web_package_exists() -> None:
    """The parametrised test above must not pass by finding no files."""
    assert len(list(PACKAGE.glob("web/*.py"))) >= 5


@pytest.mark.parametrize("package", sorted(HOMES))
def test_each_heavy_dependency_is_imported_only_in_its_home(package: str) -> None:
    importers = {
        _rel(path)
        for path in MODULES
        if any(module.split(".")[0] == package for module, _ in _imports(path))
    }
    outside = {m for m in importers if not m.startswith(HOMES[package])}
    assert outside == {m for p, m in KNOWN if p == package}


def test_known_exceptions_are_still_needed() -> None:
    for package, module in KNOWN:
        assert any(m.split(".")[0] == package for m, _ in _imports(PACKAGE / module)), module


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_dependencies_point_down(path: Path) -> None:
    rel = _rel(path)
    forbidden = next((up for prefix, up in UPWARD.items() if rel.startswith(prefix)), ())
    imported = _retrieval_modules(path)
    below = [f"retrieval.{name}" for name in forbidden]
    bad = sorted(m for m in imported if any(m == b or m.startswith(b + ".") for b in below))
    assert bad == []


def test_no_module_imports_the_package_init_for_its_version() -> None:
    """`__version__` comes from `retrieval._version`: the package `__init__` lazily imports
    `api`, so importing it from below would be an upward arrow."""
    users = [
        _rel(path)
        for path in MODULES
        if _rel(path) not in ("__init__.py",) and not _rel(path).startswith(("cli/", "web/"))
        for module, names in _imports(path)
        if module == "retrieval" and "__version__" in names
    ]
    assert users == []


def test_the_library_choices_match_the_modules_that_act_on_them() -> None:
    """defaults.py holds the choices (so the CLI builds its options without importing torch
    or FAISS); the modules that use them must accept exactly those."""
    from retrieval import defaults
    from retrieval.embedding import embedder
    from retrieval.ops import ann, exchange
    from retrieval.sources import synthetic
    from retrieval.store import vectors

    assert defaults.DEVICES == embedder.DEVICES
    assert defaults.PRECISIONS == embedder.PRECISIONS
    assert defaults.INDEX_TYPES == ("auto", *vectors.INDEX_TYPES) == ann.INDEX_CHOICES
    assert defaults.VECTOR_DTYPES == vectors.VECTOR_DTYPES
    assert defaults.EXPORT_FORMATS == exchange.FORMATS
    assert set(defaults.BENCH_MIXES) == set(synthetic.MIXES)
