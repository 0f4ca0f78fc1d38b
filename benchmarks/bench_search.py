"""fit() with a time limit on a real dataset, evaluated on its test split.

Reports the leaderboard, how close to the limit fit ended, the search overhead (time not spent
inside trials' training/evaluation) and the test mAP of the kept model.

    python benchmarks/bench_search.py --data ../shared/data/fruit --time-limit 600 --num-trials 6

--matrix runs a grid of fits one at a time (default: fruit at T=600, bccd and raccoon at T=300;
num_trials 1, 2, 4; seeds 0, 1; fixed hyperparameters {"pretrained": null}), appending one CSV row
per finished run; runs already in the CSV are skipped, so a grid resumes across sessions:

    python benchmarks/bench_search.py --matrix                      # the whole grid, resumable
    python benchmarks/bench_search.py --matrix --datasets fruit --seeds 0 --max-runs 3
    python benchmarks/bench_search.py --summary      # mean test mAP per dataset and num_trials
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import BENCH_OUTPUT, SHARED_DATA, append_csv, read_csv

import detect_automl as da

DATA_ROOT = SHARED_DATA
GRID_TIME_LIMITS = {"fruit": 600.0, "bccd": 300.0, "raccoon": 300.0}
CSV_FIELDS = ["date", "dataset", "time_limit", "num_trials", "seed", "fit_wall_s", "trials_run", "best_model",
              "best_val_map", "test_map", "test_map_50", "statuses", "load_avg", "fixed"]


def fit_and_measure(data: Path | str, *, time_limit: float, num_trials: int, seed: int, fixed: dict[str, Any],
                    output: Path | str, preset: str, gpus_per_trial: float | None,
                    cpus_per_trial: float | None = None) -> tuple[Any, dict[str, Any]]:
    """Fit on ``data``'s train/val splits, evaluate on its test split; return (leaderboard, figures)."""
    train, val, test = (da.Dataset(str(data), split=split) for split in ("train", "val", "test"))
    start = time.time()
    detector = da.fit(train, val, time_limit=time_limit, num_trials=num_trials, presets=preset, seed=seed,
                      gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial, hyperparameters=fixed,
                      output_dir=str(output))
    wall = time.time() - start
    board = detector.leaderboard()
    metrics = detector.evaluate(test)
    trial_seconds = float(board["seconds"].sum())
    figures = {
        "data": str(data), "time_limit_s": time_limit, "fit_wall_s": round(wall, 1),
        "over_limit_s": round(wall - time_limit, 1), "num_trials": num_trials,
        "trials_run": int((board["epochs"] > 0).sum()), "trial_seconds_sum": round(trial_seconds, 1),
        "best_model": detector.model_name, "best_val_map": detector.metrics.get("map"),
        "test_map": round(metrics["map"], 4), "test_map_50": round(metrics["map_50"], 4),
        "approx_concurrency": max(1, round(trial_seconds / max(1.0, wall))), "fixed": fixed,
    }
    return board, figures


def single_run(args: argparse.Namespace) -> None:
    """One fit on --data; print the leaderboard and the figures (optionally to --json)."""
    fixed: dict[str, Any] = {"pretrained": None, "epochs": 200}
    if args.num_workers is not None:
        fixed["num_workers"] = args.num_workers
    for item in args.set:
        key, _, value = item.partition("=")
        fixed[key] = json.loads(value)
    time_limit = 600.0 if args.time_limit is None else args.time_limit
    board, figures = fit_and_measure(args.data, time_limit=time_limit, num_trials=args.num_trials, seed=args.seed,
                                     fixed=fixed, output=args.output, preset=args.preset,
                                     gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial)
    shown = ["trial_id", "model", "val_map", "val_map_50", "epochs", "seconds", "status", "device", "lr",
             "batch_size", "weight_decay", "augment"]
    print(board[[c for c in shown if c in board]].to_string(index=False))
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**figures, "leaderboard": board.to_dict("records")}, indent=2,
                                              default=str))


def run_key(dataset: str, time_limit: Any, num_trials: Any, seed: Any, fixed: str) -> tuple[str, float, int, int, str]:
    """The identity of a matrix run, normalised so CSV strings and grid values compare equal;
    ``fixed`` is the CSV's text of what was fixed (a run with ``--cpus-per-trial`` is another run)."""
    return dataset, float(time_limit), int(num_trials), int(seed), fixed


def int_list(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]."""
    return [int(x) for x in text.split(",") if x.strip()]


def matrix(args: argparse.Namespace) -> None:
    """Run the grid's missing runs one at a time, appending a CSV row (and printing a JSON line) per run."""
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    for name in names:
        if args.time_limit is None and name not in GRID_TIME_LIMITS:
            raise SystemExit(f"no default time limit for {name!r}: pass --time-limit")
        if not (DATA_ROOT / name).is_dir():
            raise SystemExit(f"dataset not found: {DATA_ROOT / name}")
    grid = [(name, args.time_limit or GRID_TIME_LIMITS[name], n, seed)  # dataset-major, then seed, then trials
            for name in names for seed in int_list(args.seeds) for n in int_list(args.trials)]
    csv_path = Path(args.csv)
    fixed: dict[str, Any] = {"pretrained": None}  # fit's hyperparameters; the CSV adds a given cpus_per_trial
    cpus = {} if args.cpus_per_trial is None else {"cpus_per_trial": args.cpus_per_trial}
    fixed_json = json.dumps({**fixed, **cpus})
    done = {run_key(r["dataset"], r["time_limit"], r["num_trials"], r["seed"], r["fixed"]) for r in read_csv(csv_path)}
    todo = [run for run in grid if run_key(*run, fixed_json) not in done]
    print(f"{len(grid) - len(todo)} of {len(grid)} runs already in {csv_path}; {len(todo)} to go", flush=True)
    for name, time_limit, num_trials, seed in todo[:args.max_runs]:
        output = Path(args.output) / f"{name}-T{time_limit:g}-n{num_trials}-s{seed}"
        shutil.rmtree(output, ignore_errors=True)  # a crashed earlier attempt starts afresh
        board, figures = fit_and_measure(DATA_ROOT / name, time_limit=time_limit, num_trials=num_trials, seed=seed,
                                         fixed=fixed, output=output, preset=args.preset,
                                         gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial)
        best_val = figures["best_val_map"]
        row = {"date": datetime.now().isoformat(timespec="seconds"), "dataset": name, "time_limit": time_limit,
               "num_trials": num_trials, "seed": seed, "fit_wall_s": figures["fit_wall_s"],
               "trials_run": figures["trials_run"], "best_model": figures["best_model"],
               "best_val_map": None if best_val is None else round(float(best_val), 4),
               "test_map": figures["test_map"], "test_map_50": figures["test_map_50"],
               "statuses": ";".join(str(s) for s in board["status"]), "load_avg": round(os.getloadavg()[0], 2),
               "fixed": fixed_json}
        append_csv(csv_path, CSV_FIELDS, [row])
        shutil.rmtree(output, ignore_errors=True)
        print(json.dumps(row), flush=True)


def summary(args: argparse.Namespace) -> None:
    """Per dataset and num_trials: mean test mAP over seeds and its spread; is searching worse than noise?"""
    groups: dict[tuple[str, float], dict[int, list[float]]] = {}
    for r in read_csv(Path(args.csv)):
        by_trials = groups.setdefault((r["dataset"], float(r["time_limit"])), {})
        by_trials.setdefault(int(r["num_trials"]), []).append(float(r["test_map"]))
    if not groups:
        raise SystemExit(f"no rows in {args.csv}")
    for (name, time_limit), by_trials in sorted(groups.items()):
        print(f"{name} T={time_limit:g}")
        for n, maps in sorted(by_trials.items()):
            print(f"  num_trials={n}: mean test mAP {statistics.mean(maps):.4f}, "
                  f"spread {max(maps) - min(maps):.4f} over {len(maps)} seed(s)")
        if 1 not in by_trials:
            continue
        base, noise = statistics.mean(by_trials[1]), max(by_trials[1]) - min(by_trials[1])
        for n in (2, 4):
            if n in by_trials:
                drop = base - statistics.mean(by_trials[n])
                print(f"  num_trials={n} below num_trials=1 by {drop:.4f}; beyond the seed spread {noise:.4f}: "
                      f"{'yes' if drop > noise else 'no'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "fruit"),
                        help="a VOC root (default: fruit under $DETECT_AUTOML_DATA, else ../shared/data)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds (default: 600; in --matrix, per dataset: fruit 600, bccd and raccoon 300)")
    parser.add_argument("--num-trials", type=int, default=6)
    parser.add_argument("--preset", default="medium_quality")
    parser.add_argument("--gpus-per-trial", type=float, default=None)
    parser.add_argument("--cpus-per-trial", type=float, default=None, help="fit's cpus_per_trial (default: the plan's)")
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader workers per trial (single run)")
    parser.add_argument("--seed", type=int, default=0, help="fit's seed (initial weights, data order, samples)")
    parser.add_argument("--output", default=str(BENCH_OUTPUT / "bench_search"),
                        help="fit's output_dir (default: $DETECT_AUTOML_BENCH_OUTPUT/bench_search, "
                             "else runs/benchmarks/bench_search)")
    parser.add_argument("--json", default=None, help="also write the figures here (single run)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a fixed hyperparameter, e.g. --set ema_decay=0 (repeatable; VALUE is JSON; single run)")
    parser.add_argument("--matrix", action="store_true", help="run the grid's missing runs, one CSV row each")
    parser.add_argument("--summary", action="store_true", help="summarise the --csv file and exit")
    parser.add_argument("--csv", default=str(Path(__file__).resolve().parent / "results" / "search_matrix.csv"))
    parser.add_argument("--datasets", default="fruit,bccd,raccoon",
                        help="matrix: names under $DETECT_AUTOML_DATA (default ../shared/data)")
    parser.add_argument("--trials", default="1,2,4", help="matrix: num_trials values")
    parser.add_argument("--seeds", default="0,1", help="matrix: seeds")
    parser.add_argument("--max-runs", type=int, default=None, help="matrix: stop after this many new runs")
    args = parser.parse_args()
    if args.summary:
        summary(args)
    elif args.matrix:
        if args.set or args.num_workers is not None or args.json:
            parser.error("--set, --num-workers and --json are for the single run only")
        matrix(args)
    else:
        single_run(args)


if __name__ == "__main__":
    main()
