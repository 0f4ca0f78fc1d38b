"""Data-parallel trials: training images/s of one trial with 1, 2, ... workers on the same resources.

Each row is one ``fit`` of a fixed number of epochs (no time limit) with ``workers_per_trial=k``
and the same ``cpus_per_trial`` / ``gpus_per_trial`` split over the k workers (k=1 trains in
the calling process, as ``fit`` does for a single trial). Images/s counts the images an epoch
trains on (each worker's shard, incomplete batches dropped) over rank 0's training seconds, the
first epoch (start-up, caches) left out; ``fit s`` is the whole call, Ray Train's start included.
Rows are appended to ``benchmarks/results/data_parallel.csv``.

    python benchmarks/bench_data_parallel.py --workers 1 2 --cpus-per-trial 2
    python benchmarks/bench_data_parallel.py --workers 1 2 --gpus-per-trial 2   # a 2-GPU machine
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from datetime import date
from pathlib import Path

import detect_automl as da
from _common import BENCH_OUTPUT, REPO_ROOT, SHARED_DATA, append_csv, table

CSV = REPO_ROOT / "benchmarks" / "results" / "data_parallel.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "fruit", help="a VOC root (default: %(default)s)")
    parser.add_argument("--images", type=int, default=96, help="training images (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=4, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=4, help="per worker (default: %(default)s)")
    parser.add_argument("--model", default="ssdlite320_mobilenet_v3_large")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus-per-trial", type=float, default=2.0)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    args = parser.parse_args()

    train = da.Dataset(args.data, split="train").subset(args.images)
    val_split = "val" if (args.data / "ImageSets" / "Main" / "val.txt").exists() else "test"
    val = da.Dataset(args.data, split=val_split).subset(8)
    rows = []
    for workers in args.workers:
        start = time.time()
        detector = da.fit(train, val, workers_per_trial=workers, cpus_per_trial=args.cpus_per_trial,
                          gpus_per_trial=args.gpus_per_trial, progress=False,
                          output_dir=BENCH_OUTPUT / f"data_parallel_{workers}",
                          hyperparameters={"pretrained": None, "model": args.model, "epochs": args.epochs,
                                           "batch_size": args.batch_size})
        seconds = time.time() - start
        history = next(iter(detector.history.values()))
        steps = math.ceil(len(train) / workers) // args.batch_size  # per worker, incomplete batch dropped
        per_epoch = steps * args.batch_size * workers
        rate = statistics.median(per_epoch / r["train_seconds"] for r in history[1:])
        rows.append({"date": date.today().isoformat(), "data": args.data.name, "images": len(train),
                     "model": args.model, "batch_per_worker": args.batch_size, "workers": workers,
                     "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
                     "images_per_s": round(rate, 2), "fit_s": round(seconds, 1),
                     "val_map": round(float(detector.metrics["map"]), 4)})
        print(rows[-1], flush=True)
    append_csv(CSV, list(rows[0]), rows)
    print(table(["workers", "images/s", "fit s", "val mAP"],
                [[r["workers"], r["images_per_s"], r["fit_s"], r["val_map"]] for r in rows]))


if __name__ == "__main__":
    main()
