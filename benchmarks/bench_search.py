"""fit() with a time limit on a real dataset, evaluated on its test split.

Reports the leaderboard, how close to the limit fit ended, the search overhead (time not spent
inside trials' training/evaluation) and the test mAP of the kept model.

    python benchmarks/bench_search.py --data ../shared/data/fruit --time-limit 600 --num-trials 6
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import detect_automl as da


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/fruit")
    parser.add_argument("--time-limit", type=float, default=600)
    parser.add_argument("--num-trials", type=int, default=6)
    parser.add_argument("--preset", default="medium_quality")
    parser.add_argument("--gpus-per-trial", type=float, default=None)
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader workers per trial")
    parser.add_argument("--seed", type=int, default=0, help="fit's seed (initial weights, data order, samples)")
    parser.add_argument("--output", default="/tmp/bench_search")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a fixed hyperparameter, e.g. --set ema_decay=0 (repeatable; VALUE is JSON)")
    args = parser.parse_args()

    train = da.Dataset(args.data, split="train")
    val = da.Dataset(args.data, split="val")
    test = da.Dataset(args.data, split="test")
    fixed = {"pretrained": None, "epochs": 200}
    if args.num_workers is not None:
        fixed["num_workers"] = args.num_workers
    for item in args.set:
        key, _, value = item.partition("=")
        fixed[key] = json.loads(value)
    start = time.time()
    detector = da.fit(train, val, time_limit=args.time_limit, num_trials=args.num_trials, presets=args.preset,
                      seed=args.seed, gpus_per_trial=args.gpus_per_trial, hyperparameters=fixed, output_dir=args.output)
    wall = time.time() - start
    board = detector.leaderboard()
    metrics = detector.evaluate(test)
    trial_seconds = float(board["seconds"].sum())
    concurrency = max(1, round(trial_seconds / max(1.0, wall)))
    shown = ["trial_id", "model", "val_map", "val_map_50", "epochs", "seconds", "status", "device", "lr",
             "batch_size", "weight_decay", "augment"]
    print(board[[c for c in shown if c in board]].to_string(index=False))
    figures = {
        "data": args.data, "time_limit_s": args.time_limit, "fit_wall_s": round(wall, 1),
        "over_limit_s": round(wall - args.time_limit, 1), "num_trials": args.num_trials,
        "trials_run": int((board["epochs"] > 0).sum()), "trial_seconds_sum": round(trial_seconds, 1),
        "best_model": detector.model_name, "best_val_map": detector.metrics.get("map"),
        "test_map": round(metrics["map"], 4), "test_map_50": round(metrics["map_50"], 4),
        "approx_concurrency": concurrency, "fixed": fixed,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**figures, "leaderboard": board.to_dict("records")}, indent=2,
                                              default=str))


if __name__ == "__main__":
    main()
