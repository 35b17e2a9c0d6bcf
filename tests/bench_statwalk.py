"""Benchmark (not a unit test): re-indexing a large unchanged tree is a stat walk.

    python tests/bench_statwalk.py /tmp/stat100k /tmp/stat.parquet 100000
    retrieval import /tmp/stat.parquet --index /tmp/statix
    retrieval index /tmp/stat100k --index /tmp/statix --json      # run it a few times

It writes N small files (not images: they are never decoded) and a parquet file in the
`retrieval export` format recording each file's size and mtime, so that after the import
every file counts as unchanged and `index` does nothing but walk, stat and compare.
"""

import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from retrieval.ops.exchange import parquet_schema
from retrieval.specs import ModelInfo, Preprocess, WeightsSpec
from retrieval.store.manifest import Manifest


def main(root: str, out: str, n: int, d: int = 96) -> None:
    model = ModelInfo(
        "test_resnet",
        WeightsSpec("untrained", identity="0"),
        Preprocess(160, 160, 168, "bilinear", (0.5,) * 3, (0.5,) * 3),
        d,
    )
    schema = parquet_schema(Manifest(model=model, precision="fp32"))
    columns: dict[str, list] = {name: [] for name in schema.names if name != "embedding"}
    for i in range(n):
        folder = os.path.join(root, f"d{i // 1000:03d}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"img{i:06d}.jpg")
        with open(path, "wb") as fh:
            fh.write(b"x" * (100 + i % 50))
        st = os.stat(path)
        row = {
            "id": i + 1,
            "path": path,
            "path_bytes": os.fsencode(path),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "width": 8,
            "height": 8,
            "format": "JPEG",
            "content_hash": None,
        }
        for name, value in row.items():
            columns[name].append(value)
    xb = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    data = dict(columns, embedding=pa.FixedSizeListArray.from_arrays(pa.array(xb.ravel()), d))
    pq.write_table(pa.table({f.name: data[f.name] for f in schema}, schema=schema), out)
    print(f"wrote {n} files under {root} and {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
