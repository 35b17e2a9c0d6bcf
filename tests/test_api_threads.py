"""Library use: indexing may set torch's process-wide thread count for its own work, but the
calling program gets its own setting back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import make_photos

from retrieval.api import Index
from retrieval.ops.indexing import IndexOptions
from retrieval.specs import WeightsSpec


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the plan needs 2+ CPUs to differ")
def test_add_gives_torch_its_thread_count_back(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    make_photos(photos, range(3))
    seen: list[int] = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the caller's own choice
    try:
        report = Index(tmp_path / "index").add(
            [photos],
            model="test_resnet",
            weights=WeightsSpec("untrained", identity="0"),
            options=IndexOptions(workers=0),
            progress=lambda done, total: seen.append(torch.get_num_threads()),
        )
        assert report.added == 3
        assert max(seen) > 1  # the plan was applied while indexing (else this test proves nothing)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
