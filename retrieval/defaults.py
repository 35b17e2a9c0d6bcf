"""Every default in one place, with the reason for each."""

from __future__ import annotations

import os

#: The environment variable naming an index, and the folder `retrieval.locate` looks for
#: (walking up from the working directory) and uses under the per-user data folder when
#: neither --index nor $RETRIEVAL_INDEX is given.
INDEX_ENV = "RETRIEVAL_INDEX"
INDEX_DIR = os.path.join("indexes", "default")

#: What `--precision auto` (the library's precision="auto") means when set: fp32, bf16 or
#: fp16 instead of the hardware's choice, so a run (a test suite, CI) can pin its numbers.
PRECISION_ENV = "RETRIEVAL_PRECISION"

#: A timm model with pooled features; resnet50 is the product's reference backbone.
MODEL = "resnet50"
#: Seed for --no-pretrained, so that a query is embedded by the very same untrained network.
UNTRAINED_SEED = 0

#: Lower-case file extensions indexed by default (the check is case-insensitive).
EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
#: Added when a decoder for them is present (Pillow's AVIF support, pillow-heif).
OPTIONAL_EXTENSIONS = {".avif": "AVIF", ".heic": "HEIF", ".heif": "HEIF"}

#: Refuse images above this many megapixels (decompression bombs, RAM); --max-megapixels.
MAX_MEGAPIXELS = 100.0

#: Images per model forward pass and per database transaction.
BATCH_SIZE = 32
#: Neighbours returned per query.
TOP_K = 10

#: `evaluate --duplicates`: the cosine thresholds swept for the best pair F1, in hundredths
#: (0.50, 0.51, ..., 0.99); the threshold asked for is added when not among them.
EVAL_SWEEP = tuple(round(t / 100, 2) for t in range(50, 100))

#: Backgrounds for compositing transparent images (RGBA, LA, P with transparency), chosen
#: per image so that what a person sees survives: the alpha-weighted mean luminance (ITU-R
#: 601, 0..255) of the visible pixels decides. Dark content (mean below
#: ALPHA_LUMINANCE_SPLIT), and an image with no visible pixel, goes on white; light content
#: (a white logo) goes on black. A single white background made every white-on-transparent
#: logo a blank white square, all scoring 1.000 against each other. Deterministic, and the
#: same for indexing and queries (one decoder).
ALPHA_BACKGROUND_FOR_DARK = (255, 255, 255)
ALPHA_BACKGROUND_FOR_LIGHT = (0, 0, 0)
ALPHA_LUMINANCE_SPLIT = 128.0

#: SQLite waits this long for a lock held by another connection before failing.
BUSY_TIMEOUT_MS = 30_000

#: Names of the files inside an index directory.
CATALOG_FILE = "catalog.sqlite"
MANIFEST_FILE = "manifest.json"
VECTORS_FILE = "vectors.faiss"
LOCK_FILE = "writer.lock"
#: The folder of cached thumbnails and previews inside an index (see store.thumbnails).
THUMBNAIL_DIR = "thumbnails"

#: Pictures of indexed images for people (`Index.thumbnail`, `Index.preview`, the galleries):
#: the side of a square thumbnail and the longest side of a preview, in pixels, and the
#: sizes either may be asked for (a bound, so a client cannot ask for a 100k-pixel JPEG).
THUMBNAIL_SIZE = 256
PREVIEW_SIZE = 1024
PICTURE_SIZES = (16, 4096)
#: The thumbnail cache holds at most this many bytes of JPEGs; the least recently used are
#: evicted past it (256 px thumbnails are ~10-20 KB: tens of thousands fit).
THUMBNAIL_CACHE_BYTES = 512 * 1024 * 1024

# -- the choices the library accepts (the CLI offers exactly these; tests/test_layers.py
# checks they match the modules that act on them, which import torch or FAISS) --------------

#: Where the model runs; "auto" picks cuda when torch sees a GPU (embedding.embedder).
DEVICES = ("auto", "cpu", "cuda")
#: Model precision; "auto": bf16 where the hardware has it natively, else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Vector index types (store.vectors), "auto" first: chosen from the number of vectors,
#: their dimension and the memory budget.
INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq")
#: How the vector index stores vectors; float16 halves its memory.
VECTOR_DTYPES = ("float32", "float16")
#: Indexing engines: this machine, or a Ray cluster (`pip install 'retrieval[ray]'`).
ENGINES = ("local", "ray")
#: `export` formats: a matrix + sidecar rows file, or one parquet file.
EXPORT_FORMATS = ("npy", "parquet")
#: `export --layout`: the default (our own files, by --format) or clip-retrieval's folders of
#: .npy shards + parquet metadata (ops.layout).
EXPORT_LAYOUTS = ("default", "clip-retrieval")
#: Vector dtypes of the clip-retrieval layout's .npy shards.
LAYOUT_DTYPES = ("float32", "float16")
#: Rows per shard of the clip-retrieval layout (memory while writing: this x dim x 4 bytes).
LAYOUT_SHARD_SIZE = 100_000

#: Recall@10 that `optimize` tunes nprobe / efSearch to reach.
TARGET_RECALL = 0.95
#: Stored vectors `optimize` uses as recall queries.
RECALL_QUERIES = 1000

#: `dups`: the cosine at or above which two images are near-duplicates, and the default keep
#: rules (most pixels, then largest file, then oldest mtime, then shortest path). 0.88 is the
#: measured best: planted copies of real photos (half size, JPEG q50, 90% crop, 3 degree
#: rotation) among other photos and clip-art, tf_efficientnet_lite0 ImageNet weights: pair F1
#: 0.977 at 0.88 (precision 1.000, recall 0.955), the best any threshold reached (0.977 at
#: 0.81, precision 0.973); 0.95 gave 0.830 (recall 0.709). `python tests/bench_evaluate.py
#: dups --sweep`. It depends on the model: `retrieval evaluate --duplicates` measures yours.
DUPS_THRESHOLD = 0.88
DUPS_KEEP = ("pixels", "bytes", "oldest", "path")
#: Every keep rule, with what it prefers (ties go to the next rule; the last tie-break is
#: the path's bytes, then the id).
KEEP_RULES = (
    ("pixels", "most pixels (width x height)"),
    ("fewest-pixels", "fewest pixels"),
    ("bytes", "largest file"),
    ("smallest", "smallest file"),
    ("oldest", "oldest modification time"),
    ("newest", "newest modification time"),
    ("path", "shortest path"),
    ("longest-path", "longest path"),
)

#: `bench`: images generated (no folder given) or at most used from a folder, the generated
#: mix ("photos": 2-24 MP JPEGs with small PNGs; "png": wallpaper and clip-art PNGs, 2.3 MP
#: mean; "small": small images only), the rounds each stage runs (the report gives medians)
#: and the vectors of its synthetic search index.
BENCH_IMAGES = 48
BENCH_MIXES = ("photos", "png", "small")
BENCH_ROUNDS = 3
BENCH_SEARCH_SIZE = 10_000


def default_index_dir() -> str:
    """The index directory used when the user names none (see `retrieval.locate`)."""
    from .locate import locate

    return locate().directory


#: How long a new `--vectors milvus:http://...` index waits for the server to answer before
#: saying it cannot be reached (seconds).
MILVUS_CONNECT_SECONDS = 10.0
