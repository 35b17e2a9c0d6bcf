#!/usr/bin/env bash
# Issue 12, item 4: resnet50 speed on an NVIDIA GPU in one prepared run (< 5 minutes).
#
#   tests/gpu_bench.sh [--check-only]        # from the repository root
#
# Makes a venv (--system-site-packages, so a torch already on the machine is used; `pip
# install -e .` then fetches only what is missing, nothing but the project's own
# dependencies), generates 256 JPEGs of 2-24 MP with the project's synthetic module, and
# prints resnet50 model-only, decode (CPU worker processes and nvJPEG) and end-to-end img/s at
# batch 256 (untrained weights: speed does not depend on them), then the overlap limit.
# Every step runs under `timeout`. Without CUDA it stops at once with exit 3 and one line;
# --check-only stops right after the CUDA check (exit 0 when there is a GPU).
#
# Environment: GPU_BENCH_PYTHON (use this interpreter, no venv), GPU_BENCH_WORK (scratch
# folder; default a new one under /tmp), GPU_BENCH_IMAGES (default 256).
set -euo pipefail

say() { echo "gpu_bench: $*" >&2; }
die() {
  local code=$1
  shift
  say "$*"
  exit "$code"
}

check_only=0
case "${1:-}" in
  --check-only) check_only=1 ;;
  "") ;;
  *) die 2 "unknown option $1; use: tests/gpu_bench.sh [--check-only]" ;;
esac

cd "$(dirname "$0")/.."
[ -f pyproject.toml ] || die 2 "run from the repository (no pyproject.toml in $PWD)"
work=${GPU_BENCH_WORK:-$(mktemp -d /tmp/gpu-bench.XXXXXX)}
images=${GPU_BENCH_IMAGES:-256}
mkdir -p "$work"

# 1. Fail fast before installing anything: is there an NVIDIA driver at all?
command -v nvidia-smi >/dev/null 2>&1 ||
  die 3 "no CUDA device: nvidia-smi not found; run this on a machine with an NVIDIA GPU"
timeout 30 nvidia-smi -L >&2 || die 3 "no CUDA device: nvidia-smi -L failed (driver not loaded?)"

# 2. The project, installed from its own files only.
if [ -n "${GPU_BENCH_PYTHON:-}" ]; then
  python=$GPU_BENCH_PYTHON
else
  timeout 120 python3 -m venv --system-site-packages "$work/venv" || die 4 "python3 -m venv failed"
  timeout 240 "$work/venv/bin/python" -m pip install -q -e . ||
    die 4 "pip install -e . failed (offline? install torch on this machine first)"
  python=$work/venv/bin/python
fi

# 3. Does torch see the GPU?
timeout 120 "$python" - <<'EOF' || die 3 "no CUDA device: torch sees none (see the line above)"
import sys
import torch
if not torch.cuda.is_available():
    print(f"torch {torch.__version__} (CUDA build: {torch.version.cuda}): "
          "torch.cuda.is_available() is False", file=sys.stderr)
    sys.exit(3)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}",
      file=sys.stderr)
EOF
if [ "$check_only" = 1 ]; then
  say "CUDA ok; --check-only: stopping here"
  exit 0
fi

# 4. The corpus: 8 generators in parallel (seeds 0-7), 2-24 MP JPEGs with some small PNGs.
per=$(((images + 7) / 8))
pids=()
for seed in 0 1 2 3 4 5 6 7; do
  timeout 180 "$python" -m retrieval.sources.synthetic "$work/images/$seed" \
    --count "$per" --mix photos --seed "$seed" >/dev/null &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || die 5 "making the images failed"; done
say "made $((per * 8)) images in $work/images"

# 5. The bench: one round of every stage at batch 256 on the GPU (nvJPEG stage included).
timeout 420 "$python" -m retrieval bench "$work/images" --model resnet50 --device cuda \
  --batch-size 256 --images "$images" --rounds 1 --search-size 0 --json >"$work/bench.json" ||
  die 6 "retrieval bench failed (its error is above)"

timeout 60 "$python" - "$work/bench.json" <<'EOF'
import json
import sys

report = json.load(open(sys.argv[1]))
stages, settings, limit = report["stages"], report["settings"], report["limit"] or {}
print(f"{report['machine'].get('gpu', '?')}: resnet50 {settings['precision']}, batch "
      f"{settings['batch_size']}, {settings['workers']} decode workers, "
      f"{report['corpus']['files']} images, {report['corpus']['megapixels_mean']} MP mean")
names = {
    "model": "model only (GPU)",
    "decode": "decode, CPU worker processes",
    "decode_gpu": "decode, nvJPEG (JPEGs only)",
    "end_to_end": "end to end (in process)",
    "index_process": "retrieval index, whole process",
    "plain": "plain loop",
}
for key, label in names.items():
    if key in stages:
        print(f"{label:<34} {stages[key]['images_per_second']:>9.1f} img/s")
if limit:
    print(f"limit {limit['images_per_second']:.1f} img/s ({limit['bound']}-bound), "
          f"end to end = {limit['end_to_end_share']} of it")
print(f"full report: {sys.argv[1]}")
EOF
