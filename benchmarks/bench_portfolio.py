"""Offline benchmark that chooses a preset's portfolio: candidate configurations x datasets.

Each candidate trains alone, from scratch, with ``fit(train, val=val, time_limit=T)`` on every
dataset given, and its kept model is scored on the **val** split (never test). Every finished
run is appended to a CSV at once (with its per-epoch val mAP and time), so the benchmark runs
unattended across sessions: rows already in the CSV are skipped. ``--shard i/n`` splits the
runs between processes (two 1-thread processes on a 2-core machine, as a search's trials run).

``--choose`` reads the CSV and prints the ordered portfolio: the candidates that beat the
default on average (mean of per-dataset relative val mAP, final epoch), best first, with the
rank correlation between rung-k val mAP (time fraction k of the run) and final val mAP.

    python benchmarks/bench_portfolio.py --csv benchmarks/results/portfolio_cpu.csv --shard 0/2 &
    python benchmarks/bench_portfolio.py --csv benchmarks/results/portfolio_cpu.csv --shard 1/2
    python benchmarks/bench_portfolio.py --csv benchmarks/results/portfolio_cpu.csv --choose
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from _common import SHARED_DATA, append_csv, read_csv

import detect_automl as da

DATASETS = {  # name -> (root, format); train on "train", rank epochs and score on "val"
    "fruit": ("fruit", "voc"), "bccd": ("bccd", "voc"), "raccoon": ("raccoon", "voc"),
    "fruits_nuts": ("fruits_nuts", "coco"),
}
# CPU, from scratch, SSDlite (the CPU presets' model): what differs is the recipe. "default" is the
# preset's own configuration; the others vary learning rate, weight decay, batch, augmentation
# strength and input side.
CANDIDATES = {
    "default": {},
    "lr2e-3_aug0.25": {"lr": 2e-3, "augment": 0.25},
    "batch2_aug0.25": {"batch_size": 2, "augment": 0.25},
    "batch8_lr3e-3": {"batch_size": 8, "lr": 3e-3, "weight_decay": 5e-4},
    "lr2e-3_aug0.75": {"lr": 2e-3, "augment": 0.75},
    "aug0.75": {"augment": 0.75},
    "aug1.0": {"augment": 1.0},
    "side256": {"image_size": 256},
    "lr5e-4": {"lr": 5e-4},
    "wd0.05": {"weight_decay": 0.05},
}
FIELDS = ["date", "candidate", "params", "dataset", "seed", "time_limit", "threads", "fit_seconds", "epochs",
          "final_val_map", "final_val_map_50", "best_val_map", "best_epoch", "curve", "load_avg"]


def _run(candidate: str, dataset: str, args) -> dict:
    root, fmt = DATASETS[dataset]
    train = da.Dataset(SHARED_DATA / root, format=fmt, split="train")
    val = da.Dataset(SHARED_DATA / root, format=fmt, split="val")
    # epochs: a cap far beyond the time limit, so the schedule is planned by time alone.
    params = {"pretrained": None, "epochs": 1000, **CANDIDATES[candidate]}
    start = time.time()
    with tempfile.TemporaryDirectory() as out:
        detector = da.fit(train, val, time_limit=args.time_limit, hyperparameters=params, seed=args.seed,
                          output_dir=out, progress=False)
    seconds = time.time() - start
    history = [r for r in detector.history["0"] if r.get("val_map") is not None]
    train_s = 0.0
    curve = []
    for record in history:
        train_s += float(record.get("train_seconds") or 0.0) + float(record.get("val_seconds") or 0.0)
        curve.append([int(record["epoch"]), round(train_s, 1), round(float(record["val_map"]), 4)])
    best = max(history, key=lambda r: (r["val_map"], r.get("val_map_50") or 0.0))
    return {"date": date.today().isoformat(), "candidate": candidate, "params": json.dumps(params, sort_keys=True),
            "dataset": dataset, "seed": args.seed, "time_limit": args.time_limit, "threads": torch.get_num_threads(),
            "fit_seconds": round(seconds, 1), "epochs": history[-1]["epoch"],
            "final_val_map": round(history[-1]["val_map"], 4), "final_val_map_50": round(history[-1]["val_map_50"], 4),
            "best_val_map": round(best["val_map"], 4), "best_epoch": best["epoch"], "curve": json.dumps(curve),
            "load_avg": round(os.getloadavg()[0], 2)}


def _spearman(a: list[float], b: list[float]) -> float:
    def ranks(values):
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        for rank, i in enumerate(order):
            out[i] = float(rank)
        return out

    ra, rb = ranks(a), ranks(b)
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    return statistics.correlation(ra, rb)


def _at_fraction(curve: list, fraction: float) -> float:
    """Val mAP of the last validation done by ``fraction`` of the run's time (0 if none yet)."""
    end = curve[-1][1]
    seen = [m for _, t, m in curve if t <= fraction * end + 1e-9]
    return seen[-1] if seen else 0.0


def _patience(curve: list, patience: int) -> tuple[float, float]:
    """Replay ``TrainConfig.patience`` on a recorded curve: (best val mAP kept, share of time used).

    As ``engine.train`` counts it: validations without a new best, only in the second half."""
    end, best, stale = curve[-1][1], -1.0, 0
    for _, seconds, value in curve:
        improved = value > best
        best = max(best, value)
        if seconds >= 0.5 * end:
            stale = 0 if improved else stale + 1
            if stale >= patience:
                return best, seconds / end
    return best, 1.0


def choose(path: Path) -> None:
    """Summarise the CSV, one budget at a time: runs at different time limits never share a mean."""
    budgets: dict[float, list[dict]] = {}
    for row in read_csv(path):
        budgets.setdefault(float(row["time_limit"]), []).append(row)
    for time_limit, rows in sorted(budgets.items()):
        print(f"== time limit {time_limit:g} s: {len(rows)} runs")
        _summarise(rows)


def _summarise(rows: list[dict]) -> None:
    by = {}
    for row in rows:
        by.setdefault(row["dataset"], {}).setdefault(row["candidate"], []).append(row)
    print("final val mAP (mean over seeds) per dataset:")
    names = sorted({r["candidate"] for r in rows}, key=list(CANDIDATES).index)
    for dataset, runs in by.items():
        line = ", ".join(f"{c} {statistics.mean(float(r['final_val_map']) for r in runs[c]):.3f}"
                         for c in names if c in runs)
        print(f"  {dataset}: {line}")
    gains = {}
    for name in names:
        ratios = []
        for dataset, runs in by.items():
            if name in runs and "default" in runs:
                ours = statistics.mean(float(r["final_val_map"]) for r in runs[name])
                base = statistics.mean(float(r["final_val_map"]) for r in runs["default"])
                ratios.append(ours / max(base, 1e-3))
        if ratios:
            gains[name] = statistics.mean(ratios)
    print("mean relative final val mAP vs default:", {k: round(v, 3) for k, v in gains.items()})
    portfolio = [n for n, g in sorted(gains.items(), key=lambda kv: -kv[1]) if n != "default" and g > 1.0]
    print("portfolio (beats the default on average, best first):", portfolio)
    curves = [(json.loads(r["curve"]), float(r["best_val_map"])) for r in rows]
    for patience in (3, 5, 8, 10, 15, 20):
        replays = [(_patience(c, patience), best) for c, best in curves]
        loss = max(best - kept for (kept, _), best in replays)
        stopped = sum(used < 1.0 for (_, used), _ in replays)
        print(f"patience {patience}: stops {stopped} of {len(replays)} runs early; worst loss of best val mAP "
              f"{loss:.4f}")
    for fraction in (0.1, 0.25, 0.5, 0.75):
        rhos = []
        for runs in by.values():
            finals, early = [], []
            for name in names:
                for row in runs.get(name, []):
                    curve = json.loads(row["curve"])
                    finals.append(float(row["final_val_map"]))
                    early.append(_at_fraction(curve, fraction))
            rho = _spearman(early, finals)
            if rho == rho:
                rhos.append(rho)
        mean = statistics.mean(rhos) if rhos else float("nan")
        print(f"rank correlation, val mAP at {fraction:.0%} of the run vs final: mean {mean:.2f} over "
              f"{len(rhos)} datasets {[round(r, 2) for r in rhos]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=Path(__file__).resolve().parent / "results" / "portfolio_cpu.csv")
    parser.add_argument("--time-limit", type=float, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th of the pending runs, from i")
    parser.add_argument("--choose", action="store_true", help="only summarise the CSV")
    args = parser.parse_args()
    if args.choose:
        choose(args.csv)
        return
    torch.set_num_threads(args.threads)
    index, count = (int(x) for x in args.shard.split("/"))
    plan = [(c, d) for c in args.candidates.split(",") for d in args.datasets.split(",")]
    for i, (candidate, dataset) in enumerate(plan):
        if i % count != index:
            continue
        done = {(r["candidate"], r["dataset"], r["seed"], r["time_limit"]) for r in read_csv(args.csv)}
        if (candidate, dataset, str(args.seed), str(args.time_limit)) in done:
            continue
        row = _run(candidate, dataset, args)
        append_csv(args.csv, FIELDS, [row])
        print(json.dumps({k: row[k] for k in ("candidate", "dataset", "epochs", "final_val_map", "best_val_map",
                                              "fit_seconds")}), flush=True)


if __name__ == "__main__":
    main()
