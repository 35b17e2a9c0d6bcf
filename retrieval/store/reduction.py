"""PCA reduction (optionally whitened) of stored vectors, for a smaller vector-index cache.

The catalogue always keeps the model's full vectors; a reduction only shapes the FAISS cache
(and the candidates it returns, which are re-scored against the full vectors). It is learned
once, from a seeded sample of the collection, when the collection first holds enough vectors
(`min_vectors`), and kept in the catalogue so every rebuild of the cache uses the same one.

    y = normalise((x - mean) @ components)        x: (n, d_in), y: (n, dim), float32

With whitening, each component is divided by the square root of its eigenvalue (plus a small
floor, so directions with almost no variance are not blown up into noise).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: Never learn from fewer vectors than this, nor fewer than MIN_PER_DIM per output dimension.
MIN_VECTORS = 1000
MIN_PER_DIM = 10
#: At most this many vectors are sampled to estimate the covariance.
SAMPLE_MAX = 50_000
#: Eigenvalue floor for whitening, relative to the largest kept eigenvalue.
WHITEN_FLOOR = 1e-3


class ReductionError(ValueError):
    """The reduction cannot be learned or read (the message says why)."""


def min_vectors(dim: int) -> int:
    """How many stored vectors a reduction to `dim` dimensions needs before it is learned."""
    return max(MIN_VECTORS, MIN_PER_DIM * dim)


@dataclass(frozen=True)
class Reduction:
    """A learned projection: mean (d_in,) float64, components (d_in, dim) float32."""

    mean: np.ndarray
    components: np.ndarray
    whiten: bool
    trained_on: int
    #: Fraction of the sample's variance the kept components explain (before whitening).
    explained: float

    @property
    def dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def from_dim(self) -> int:
        return int(self.components.shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Project (n, d_in) vectors to L2-normalised (n, dim) float32."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.from_dim:
            raise ValueError(f"expected (n, {self.from_dim}) vectors, got {x.shape}")
        y = (x - self.mean.astype(np.float32)) @ self.components
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return np.ascontiguousarray(y / np.maximum(norms, 1e-12), dtype=np.float32)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            mean=self.mean,
            components=self.components,
            whiten=np.array(self.whiten),
            trained_on=np.array(self.trained_on, dtype=np.int64),
            explained=np.array(self.explained),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Reduction:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return cls(
                    z["mean"].astype(np.float64),
                    np.ascontiguousarray(z["components"], dtype=np.float32),
                    bool(z["whiten"]),
                    int(z["trained_on"]),
                    float(z["explained"]),
                )
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise ReductionError(f"the stored reduction is unreadable ({exc})") from None

    def describe(self) -> dict[str, object]:
        """What the manifest records about it (its checksum pins the exact matrix)."""
        return {
            "dim": self.dim,
            "from_dim": self.from_dim,
            "whiten": self.whiten,
            "trained_on": self.trained_on,
            "explained_variance": round(self.explained, 4),
            "sha256": sha256(self.to_bytes()),
        }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def learn(
    batches: Iterable[np.ndarray], n: int, dim: int, whiten: bool = False, seed: int = 0
) -> Reduction:
    """Learn a reduction to `dim` from `batches` ((b, d_in) float32, n rows in all).

    About SAMPLE_MAX rows are drawn uniformly (seeded); the covariance is accumulated batch by
    batch in float64, so memory stays at d_in x d_in whatever n is.
    """
    rate = min(1.0, SAMPLE_MAX / max(n, 1))
    rng = np.random.default_rng(seed)
    total = None
    first = None
    count = 0
    for xb in batches:
        if rate < 1.0:
            xb = xb[rng.random(len(xb)) < rate]
        if not len(xb):
            continue
        xb = np.asarray(xb, dtype=np.float32)
        if total is None:
            d_in = xb.shape[1]
            total, first = np.zeros(d_in), np.zeros((d_in, d_in))
        total += xb.sum(axis=0, dtype=np.float64)
        first += (xb.T @ xb).astype(np.float64)
        count += len(xb)
    if total is None or first is None or count < 2:
        raise ReductionError(f"a reduction needs vectors to learn from; {count} were sampled")
    d_in = len(total)
    if not 0 < dim < d_in:
        raise ReductionError(f"--dim must be between 1 and {d_in - 1}, not {dim}")
    mean = total / count
    covariance = (first - count * np.outer(mean, mean)) / (count - 1)
    values, vecs = np.linalg.eigh(covariance)  # ascending
    values, vecs = values[::-1], vecs[:, ::-1]
    values = np.maximum(values, 0.0)
    kept, basis = values[:dim], vecs[:, :dim]
    _fix_signs(basis)
    if whiten:
        floor = WHITEN_FLOOR * max(float(kept[0]), 1e-12)
        basis = basis / np.sqrt(kept + floor)
    explained = float(kept.sum() / values.sum()) if values.sum() > 0 else 0.0
    return Reduction(mean, np.ascontiguousarray(basis, dtype=np.float32), whiten, count, explained)


def _fix_signs(basis: np.ndarray) -> None:
    """Make each component's largest-magnitude entry positive (eigh's signs are arbitrary),
    so the same data always gives the same matrix."""
    rows = np.abs(basis).argmax(axis=0)
    signs = np.sign(basis[rows, np.arange(basis.shape[1])])
    basis *= np.where(signs == 0, 1.0, signs)
