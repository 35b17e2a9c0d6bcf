"""retrieval: index folders of images with a timm ResNet and FAISS, search by example image,
export the embeddings. `Index` is the library API; `retrieval` on the command line is a thin
layer over it."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import RetrievalError  # noqa: E402

__all__ = ["Index", "RetrievalError", "__version__"]


def __getattr__(name: str) -> object:
    # Lazy, so `import retrieval` (and `retrieval --help`) stays fast.
    if name == "Index":
        from .api import Index

        return Index
    raise AttributeError(name)
