#!/usr/bin/env bash
# GPU figures for benchmarks/RESULTS.md, on a lent GPU machine (no network), from the repo root:
#   bash benchmarks/gpu_check.sh
# The machine has no package registry: carry the bundle (ray, albumentations, pycocotools for its
# Python 3.12) built here first by benchmarks/gpu_bundle/build.sh.
# Every step has its own timeout and logs to $OUT, so one failure does not hide the others.
# Each STEPS set fits one 10-minute call (~7 min).
# Steps (issue 11): AMP step time fp32/fp16/bf16 and the box shift AMP would cause; a single AMP fit;
# a 2-trial search with gpus_per_trial=0 on the GPU machine (its leaderboard's device column must say
# cpu); a 4-trial search at gpus_per_trial=0.25 (4 trials at once on one GPU).
# Steps (issue 12): the planned search against the default alone at the same T on BCCD: 1 trial, then
# 4 trials at gpus_per_trial=0.25 (wall <= 1.1 T for both; best of 4 >= the single trial), then 4 with
# the plan's own GPU fraction.
#
# Environment (paths relative to the repo root unless given absolute):
#   STEPS    issues to run, default "11 12"
#   DATA     VOC root the steps train on, default datasets/bccd
#   OUT      logs and JSON figures, default runs/gpu_check/out (the device tool sets $OUT itself)
#   RUNS     fits' output directories, default runs/gpu_check
#   BUNDLE   the carried bundle, default .devbundle; SITE_DIR where it unpacks, default $BUNDLE/site
#   BENCHES  extra bench_*.py names to run on cuda (e.g. "bench_predict bench_train_overhead")
#   TAIL     log lines shown per step, default 25
set -u
STEPS=${STEPS:-11 12}
DATA=${DATA:-datasets/bccd}
OUT=${OUT:-runs/gpu_check/out}
RUNS=${RUNS:-runs/gpu_check}
BUNDLE=${BUNDLE:-.devbundle}
SITE_DIR=${SITE_DIR:-$BUNDLE/site}
absdir() { mkdir -p "$1" && (cd "$1" && pwd); }  # absolute: Ray's trial processes run elsewhere
OUT=$(absdir "$OUT") && RUNS=$(absdir "$RUNS") && SITE_DIR=$(absdir "$SITE_DIR") || exit 1
export SITE_DIR
bash "$BUNDLE/setup.sh" >/dev/null || exit 1
export PYTHONPATH=$SITE_DIR:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export RAY_USAGE_STATS_ENABLED=0 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
  | tee -a "$OUT/gpu.txt"

# GPU utilisation for the whole run; stop only the monitor this script started, by its PID.
nvidia-smi dmon -s um -d 1 -o T > "$OUT/dmon.txt" 2>&1 &
DMON=$!
trap 'kill "$DMON" 2>/dev/null' EXIT
trap 'exit 130' INT TERM  # run the EXIT trap on Ctrl-C or a kill too

step() {
  local name=$1 limit=$2
  shift 2
  echo "== $name $(date +%T)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "   rc=$? $(date +%T)"
  tail -n "${TAIL:-25}" "$OUT/$name.log"
}

if [[ " $STEPS " == *" 11 "* ]]; then
  step amp 120 python3 benchmarks/bench_amp.py --device cuda --data "$DATA" --json "$OUT/amp.json"
  step single_amp 60 python3 -m detect_automl.cli fit "$DATA" --split train --val-split val --test-split test \
    --time-limit 45 --pretrained none --model fasterrcnn_mobilenet_v3_large_fpn --output "$RUNS/single_amp"
  for f in ${BENCHES:-}; do step "$f" 60 python3 "benchmarks/$f.py" --device cuda; done
  TAIL=12 step search_cpu_on_gpu_machine 90 python3 benchmarks/bench_search.py --data "$DATA" --time-limit 60 \
    --num-trials 2 --gpus-per-trial 0 --output "$RUNS/search_cpu" --json "$OUT/search_cpu_on_gpu_machine.json"
  TAIL=12 step search_gpu025 160 python3 benchmarks/bench_search.py --data "$DATA" --time-limit 130 --num-trials 4 \
    --gpus-per-trial 0.25 --output "$RUNS/search_gpu025" --json "$OUT/search_gpu025.json"
fi
if [[ " $STEPS " == *" 12 "* ]]; then
  for n in 1 4; do
    TAIL=12 step "plan_n${n}_gpu025" 200 python3 benchmarks/bench_search.py --data "$DATA" --time-limit 150 \
      --num-trials "$n" --gpus-per-trial 0.25 --output "$RUNS/plan_n${n}_gpu025" --json "$OUT/plan_n${n}_gpu025.json"
  done
  TAIL=12 step plan_n4_auto 200 python3 benchmarks/bench_search.py --data "$DATA" --time-limit 150 --num-trials 4 \
    --output "$RUNS/plan_n4_auto" --json "$OUT/plan_n4_auto.json"
fi
