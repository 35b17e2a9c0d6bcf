"""Wall time of `retrieval index --engine ray` against the local engine on one machine.

    python -m retrieval.sources.synthetic /tmp/png500 --count 500 --mix png --from data/photos \
        --seed 1
    python tests/bench_ray.py /tmp/png500 --model resnet50 --rounds 3

Each round indexes FOLDER into a fresh index with each engine (alternating, same options:
--no-pretrained, fp32), as `python -m retrieval` subprocesses, so Ray's start and stop and
the actors' model load are in the ray figure, as a user sees them. Prints the median wall
seconds of each engine and their ratio (target: ray <= 1.15 x local), and the load average
(other work on the machine moves both figures; compare the ratio of one run only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def _run(folder: str, model: str, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as scratch:
        argv = [sys.executable, "-m", "retrieval", "index", folder, "--index", scratch + "/i"]
        argv += ["--model", model, "--no-pretrained", "--precision", "fp32", "-q", *extra]
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        if done.returncode:
            sys.exit(f"{' '.join(argv)} failed:\n{done.stderr}")
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--actors", default=None)
    args = parser.parse_args()
    ray = ["--engine", "ray"] + (["--actors", args.actors] if args.actors else [])
    times: dict[str, list[float]] = {"local": [], "ray": []}
    for _ in range(args.rounds):
        times["local"].append(_run(args.folder, args.model, []))
        times["ray"].append(_run(args.folder, args.model, ray))
    images = len(os.listdir(args.folder))
    local, distributed = (statistics.median(times[k]) for k in ("local", "ray"))
    print(f"{images} images, {args.model}, {os.cpu_count()} CPUs, {args.rounds} rounds")
    print(f"  load average at the end {os.getloadavg()[0]:.1f}")
    for name, runs in times.items():
        print(f"  {name:5s} median {statistics.median(runs):7.1f} s  runs {runs}")
    print(f"  ray / local = {distributed / local:.2f}")


if __name__ == "__main__":
    main()
