"""OpenMP threads wait passively unless the user chose otherwise (see retrieval.embedding)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = (
    "import os; import retrieval.embedding.embedder; import torch; "
    "print(os.environ.get('OMP_WAIT_POLICY'))"
)


def _policy(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_torch_threads_wait_passively_by_default() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy(env) == "PASSIVE"


def test_an_explicit_policy_is_kept() -> None:
    assert _policy({**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
