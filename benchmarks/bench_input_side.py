"""SSDlite's input side and memory layout on a CPU: seconds a training step, and val mAP per budget.

--steps times one SSDlite training step (batch 4, random 320x320 images, AdamW) for each square
side and layout, after warm-up steps, in this process (``--threads``, default 2):

    python benchmarks/bench_input_side.py --steps

--pairs trains, for each set, the same fit() at each side side by side, each pinned to one core
(``taskset``), from scratch for ``--time-limit`` seconds, and scores it on the set's **val** split
(never test); one CSV row per run:

    python benchmarks/bench_input_side.py --pairs --datasets fruit,raccoon,bccd --time-limit 450
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from _common import BENCH_OUTPUT, SHARED_DATA, append_csv

SIDES = (320, 256)
CSV_FIELDS = ["date", "dataset", "image_size", "time_limit", "seed", "fit_wall_s", "epochs", "final_val_map",
              "best_val_map"]


def step_seconds(side: int, channels_last: bool, steps: int = 10) -> float:
    """Mean seconds of ``steps`` training steps after 3 warm-up ones."""
    from detect_automl.engine.optim import build_optimizer
    from detect_automl.models import build

    torch.manual_seed(0)
    detector = build("ssdlite320_mobilenet_v3_large", 3, image_size=side)
    if channels_last:
        detector = detector.to(memory_format=torch.channels_last)
    detector.train()
    optimizer = build_optimizer(detector, "adamw", 1e-3, 1e-4, 0.9)
    images = [torch.rand(3, 320, 320) for _ in range(4)]
    targets = [{"boxes": torch.tensor([[40.0, 50.0, 260.0, 280.0]]), "labels": torch.tensor([1])} for _ in images]
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def one_fit(dataset: str, side: int, time_limit: float, seed: int) -> dict:
    """fit(train, val) at ``side``, from scratch; the row for the CSV (val only)."""
    import detect_automl as da

    train, val = (da.Dataset(str(SHARED_DATA / dataset), split=split) for split in ("train", "val"))
    start = time.time()
    detector = da.fit(train, val, time_limit=time_limit, seed=seed, progress=False,
                      hyperparameters={"pretrained": None, "image_size": side},
                      output_dir=str(BENCH_OUTPUT / "input_side" / f"{dataset}-{side}-s{seed}"))
    history = next(iter(detector.history.values()))
    return {"date": datetime.now().isoformat(timespec="seconds"), "dataset": dataset, "image_size": side,
            "time_limit": time_limit, "seed": seed, "fit_wall_s": round(time.time() - start, 1),
            "epochs": len(history), "final_val_map": round(history[-1].get("val_map", float("nan")), 4),
            "best_val_map": round(detector.metrics.get("map", float("nan")), 4)}


def pairs(args: argparse.Namespace) -> None:
    """Each set's sides side by side, one core each; rows appended to ``args.csv``."""
    path = Path(args.csv)
    for dataset in args.datasets.split(","):
        procs = [subprocess.Popen(["taskset", "-c", str(core), sys.executable, __file__, "--one", dataset, str(side),
                                   str(args.time_limit), str(args.seed)], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
                 for core, side in enumerate(SIDES)]
        rows = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
        append_csv(path, CSV_FIELDS, rows)
        for row in rows:
            print(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", action="store_true", help="time a training step per side and layout")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", action="store_true", help="fit each set at each side, side by side")
    parser.add_argument("--datasets", default="fruit,raccoon,bccd")
    parser.add_argument("--time-limit", type=float, default=450.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", default=str(Path(__file__).resolve().parent / "results" / "input_side_cpu.csv"))
    parser.add_argument("--one", nargs=4, metavar=("DATASET", "SIDE", "TIME_LIMIT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        dataset, side, time_limit, seed = args.one
        print(json.dumps(one_fit(dataset, int(side), float(time_limit), int(seed))))
    elif args.pairs:
        pairs(args)
    elif not args.steps:
        parser.print_help()
    else:
        torch.set_num_threads(args.threads)
        for side in SIDES:
            for channels_last in (False, True):
                seconds = step_seconds(side, channels_last)
                print(json.dumps({"image_size": side, "layout": "channels_last" if channels_last else "contiguous",
                                  "threads": args.threads, "step_seconds": round(seconds, 3)}))


if __name__ == "__main__":
    main()
