#!/usr/bin/env bash
# GPU figures for benchmarks/README.md, run on a lent GPU machine (no network) from the repo root:
#   carry .devbundle, built here first by benchmarks/gpu_bundle/build.sh (ray, albumentations, pycocotools
#   for the machine's Python 3.12: it has no package registry)
# Every step has its own timeout and logs to $OUT, so one failure does not hide the others.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
bash .devbundle/setup.sh >/dev/null && export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 || exit 1
export RAY_USAGE_STATS_ENABLED=0 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"
(nvidia-smi dmon -s um -d 1 -o T > "$OUT/dmon.txt" 2>&1 &)
step() { local name=$1 limit=$2; shift 2; echo "== $name $(date +%T)"; timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "   rc=$? $(date +%T)"; tail -n "${TAIL:-25}" "$OUT/$name.log"; }
step single_amp 60 python3 -m detect_automl.cli fit datasets/bccd --split train --val-split val --test-split test \
  --time-limit 45 --pretrained none --model fasterrcnn_mobilenet_v3_large_fpn --output /tmp/gpu_single
for f in ${BENCHES:-}; do step $f 60 python3 benchmarks/$f.py --device cuda; done
TAIL=14 step search_gpu025 160 python3 benchmarks/bench_search.py --data datasets/bccd --time-limit 130 --num-trials 8 \
  --gpus-per-trial 0.25 --num-workers 3 --output /tmp/gpu_search025 --json "$OUT/search_gpu025.json"
[ -n "${WITH_HALF:-}" ] && TAIL=10 step search_gpu050 130 python3 benchmarks/bench_search.py --data datasets/bccd --time-limit 100 --num-trials 4 \
  --gpus-per-trial 0.5 --num-workers 3 --output /tmp/gpu_search050 --json "$OUT/search_gpu050.json"
pkill -f "nvidia-smi dmon" || true
