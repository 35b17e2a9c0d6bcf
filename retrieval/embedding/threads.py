"""Torch's process-wide intra-op thread count, kept for the program that calls the library.

Indexing sets the count to this machine's plan (`ops.pipeline.plan_resources`), then between
batches to the balanced split (`ops.balance`); a program that calls the library gets its own
setting back afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def kept() -> Iterator[None]:
    """Give torch back, on leaving, the thread count it had on entering.

    Looked up in `sys.modules`, not imported: a call that never loads torch does not pay for
    importing it (seconds). If torch was first imported inside the block, the plan stays:
    there was no setting to keep.
    """
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if torch is not None and before is not None:
            torch.set_num_threads(before)


def set_count(threads: int) -> None:
    """Set torch's intra-op threads to `threads` (>= 1) between batches, if torch is loaded
    (without it there is nothing to set) and the count differs (setting it is not free)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(max(1, threads))


def count() -> int | None:
    """Torch's intra-op threads now, or None when torch is not loaded."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None
