"""Moved to `retrieval.sources.synthetic` (image making imports Pillow, which lives under
sources/). Kept so that `python -m retrieval.ops.bench_images ...`, as the README writes it,
still works; remove once the README names `retrieval.sources.synthetic`."""

from __future__ import annotations

from ..sources.synthetic import MIXES, SMALL_MIX, main, make_images

__all__ = ["MIXES", "SMALL_MIX", "main", "make_images"]

if __name__ == "__main__":
    main()
