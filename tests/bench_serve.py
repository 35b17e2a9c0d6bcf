"""Load bench of `retrieval serve` on 127.0.0.1 (not collected by pytest).

    python tests/bench_serve.py [--n 10000] [--clients 20] [--requests 25]

1. A synthetic-vector index of N rows (bench_ann's mixture, `retrieval import`), each row a
   real tiny JPEG on disk (so thumbnails are real work), served by `retrieval serve`.
2. First page: GET / and GET /?like=ID (server-rendered), cold then warm, milliseconds;
   and the first contentful paint in headless Chromium (when playwright and
   /usr/bin/chromium are there) of the search, results, image and index pages.
3. One client x 50 `--like` searches by id (/api/images/ID/similar, k=10), then CLIENTS
   threads x REQUESTS requests of them alone, then alternating with thumbnails (first
   views), then thumbnails the cache serves: p50/p99 per kind, error count.
4. Upload search vs the CLI's embedding of one image, on a test_resnet index of data/photos:
   the API's POST /api/search round trip (model warm) against `Index.embed` of one file with a
   loaded model (what `retrieval search FILE` spends embedding) and against the whole
   `retrieval search FILE` command.

Prints one JSON object. Everything runs on this machine, loopback only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _procs import free_port  # noqa: E402
from bench_ann import mixture, synthetic_schema  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data" / "photos"


def tiny_jpegs(folder: Path, n: int) -> list[tuple[str, int, int, bytes]]:
    """n small distinct JPEGs (64 x 48): (path, size, mtime_ns, blake2b-128 of the bytes)."""
    from PIL import Image

    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = np.kron(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), np.ones((8, 8, 1)))
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=80)
        path = sub / f"img{i:06d}.jpg"
        path.write_bytes(buffer.getvalue())
        st = path.stat()
        digest = hashlib.blake2b(buffer.getvalue(), digest_size=16).digest()
        out.append((str(path), st.st_size, st.st_mtime_ns, digest))
    return out


def write_export(out: str, files: list[tuple[str, int, int, bytes]], d: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = synthetic_schema(d)
    xb = np.concatenate([x for _, x in mixture(len(files), d, seed=1)])
    table = pa.table(
        {
            "id": np.arange(len(files)),
            "path": [f[0] for f in files],
            "path_bytes": [f[0].encode() for f in files],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(xb.ravel()), d),
            "size": [f[1] for f in files],
            "mtime_ns": [f[2] for f in files],
            "width": np.full(len(files), 64, np.int32),
            "height": np.full(len(files), 48, np.int32),
            "format": ["JPEG"] * len(files),
            "content_hash": [f[3] for f in files],
        },
        schema=schema,
    )
    pq.write_table(table, out)


def retrieval(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "retrieval", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr}")
    return done


class Server:
    """`retrieval serve` on a free 127.0.0.1 port, stopped on exit."""

    def __init__(self, index: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "retrieval",
                "serve",
                "--index",
                index,
                "--port",
                str(self.port),
                "--device",
                "cpu",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                get(self.base + "/api/info")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise SystemExit("the server did not start")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def get(url: str) -> tuple[int, float]:
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, (time.perf_counter() - start) * 1000


def load(base: str, ids: list[int], clients: int, requests: int, mode: str) -> dict:
    """clients threads x requests each: "mixed" (like-searches and thumbnails alternate),
    "like" or "thumbnail" only."""
    times: dict[str, list[float]] = {"like": [], "thumbnail": []}
    errors = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for n in range(requests):
            image_id = rng.choice(ids)
            kind = mode if mode != "mixed" else ("thumbnail" if n % 2 else "like")
            url = f"{base}/api/images/{image_id}/" + (
                "thumbnail" if kind == "thumbnail" else "similar?k=10"
            )
            status, ms = get(url)
            with lock:
                times[kind].append(ms)
                if status != 200:
                    errors.append(status)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    out: dict = {"requests": clients * requests, "errors": len(errors), "seconds": round(wall, 2)}
    for kind, found in times.items():
        if found:
            out[kind] = {"n": len(found), "p50_ms": pct(found, 50), "p99_ms": pct(found, 99)}
    return out


def browser_paint(base: str, paths: list[str]) -> dict | None:
    """First contentful paint (ms, the browser's own clock) of each page in headless
    Chromium, median of 5 fresh loads; None without playwright or /usr/bin/chromium."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not os.path.exists("/usr/bin/chromium"):
        return None
    script = "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1"
    out = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            for path in paths:
                found = []
                for _ in range(5):
                    page = browser.new_page()
                    page.goto(base + path, wait_until="load")
                    page.wait_for_function(f"() => ({script}) >= 0")
                    found.append(page.evaluate(script))
                    page.close()
                out[path] = round(statistics.median(found), 1)
        finally:
            browser.close()
    return out


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


def upload_vs_cli(work: Path, model: str = "test_resnet") -> dict:
    """Upload search through the API vs the CLI's embedding of the same image, `model`'s."""
    from retrieval import Index

    index = str(work / f"photos-index-{model}")
    options = ("--model", model, "--no-pretrained", "--workers", "0", "--quiet")
    retrieval("index", str(DATA), "--index", index, *options)
    query = DATA / "chelsea.jpg"
    loaded = Index(index).load_embedder("cpu")
    cli_ms = []
    for _ in range(3):
        start = time.perf_counter()
        retrieval("search", str(query), "--index", index, "--device", "cpu", "-k", "10")
        cli_ms.append((time.perf_counter() - start) * 1000)
    data = query.read_bytes()
    embed_ms, upload_ms = [], []
    with Server(index) as server:
        post_image(server.base, data)  # warm-up
        for _ in range(10):  # interleaved, so both see the same load on the machine
            start = time.perf_counter()
            Index(index).embed([query], embedder=loaded)
            embed_ms.append((time.perf_counter() - start) * 1000)
            upload_ms.append(post_image(server.base, data))
    return {
        "embed_one_image_ms": round(statistics.median(embed_ms), 1),
        "cli_search_command_ms": round(statistics.median(cli_ms), 1),
        "api_upload_search_ms": round(statistics.median(upload_ms), 1),
        "upload_over_embed": round(statistics.median(upload_ms) / statistics.median(embed_ms), 2),
        "upload_over_cli_command": round(
            statistics.median(upload_ms) / statistics.median(cli_ms), 3
        ),
    }


def post_image(base: str, data: bytes) -> float:
    boundary = "benchboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        base + "/api/search",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=25)
    parser.add_argument("--upload-model", default="test_resnet", help="model of the upload test")
    args = parser.parse_args()
    out: dict = {"n": args.n, "d": args.d, "clients": args.clients, "requests": args.requests}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        files = tiny_jpegs(work / "files", args.n)
        write_export(str(work / "export.parquet"), files, args.d)
        retrieval("import", str(work / "export.parquet"), "--index", str(work / "index"))
        out["build_seconds"] = round(time.perf_counter() - start, 1)
        with Server(str(work / "index")) as server:
            ids = list(range(1, args.n + 1))
            pages = [get(server.base + "/")[1] for _ in range(6)]
            likes = [get(f"{server.base}/?like={ids[i]}")[1] for i in range(6)]
            out["first_page_ms"] = {
                "search_cold": round(pages[0], 1),
                "search_warm_median": round(statistics.median(pages[1:]), 1),
                "like_results_cold": round(likes[0], 1),
                "like_results_warm_median": round(statistics.median(likes[1:]), 1),
            }
            out["first_contentful_paint_ms"] = browser_paint(
                server.base, ["/", f"/?like={ids[0]}", f"/image/{ids[1]}", "/index"]
            )
            out["like_one_client"] = load(server.base, ids, 1, 50, "like")
            out["like_only"] = load(server.base, ids, args.clients, args.requests, "like")
            out["mixed"] = load(server.base, ids, args.clients, args.requests, "mixed")
            hot = ids[: args.clients * args.requests // 4]  # thumbnails viewed already
            load(server.base, hot, args.clients, 5, "thumbnail")
            out["cached_thumbnails"] = load(
                server.base, hot, args.clients, args.requests, "thumbnail"
            )
        out["upload"] = upload_vs_cli(work, args.upload_model)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
