"""Ray Tune search: resources, ASHA, time budget, cluster address, leaderboard, best checkpoint."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ..config import TrainConfig
from ..data.dataset import Dataset
from ..errors import InputError, SearchError
from ..leaderboard import history_record, leaderboard_row, select_best, sort_leaderboard
from .space import default_point, to_tune_domains
from .trainable import CHECKPOINT_FILE, train_trial

__all__ = ["SearchOutcome", "max_concurrent_trials", "run_search"]

log = logging.getLogger("detect_automl")

EXPERIMENT = "search"
SIGNATURE_FILE = "search.json"
"""What a search was asked (space, trials, fixed values), kept beside it so a resume can check it."""


@dataclass
class SearchOutcome:
    """What the search found: the leaderboard, per-trial history and the best trial's weights."""

    leaderboard: pd.DataFrame
    history: dict[str, list[dict]]
    best_config: TrainConfig | None = None
    best_state: dict | None = None
    best_metrics: dict = field(default_factory=dict)
    experiment_path: Path | None = None
    interrupted: bool = False
    gpus_per_trial: float = 0.0


def max_concurrent_trials(num_cpus: float, num_gpus: float, cpus_per_trial: float, gpus_per_trial: float,
                          gpus_per_node: list[float] | None = None) -> int:
    """How many trials fit at once. Fractional GPUs pack per GPU, never across GPUs.

    >>> max_concurrent_trials(64, 8, 1, 0.15)   # 6 per GPU x 8 GPUs
    48
    """
    by_cpu = math.floor(num_cpus / cpus_per_trial + 1e-9) if cpus_per_trial > 0 else 10**6
    if gpus_per_trial <= 0:
        return max(0, by_cpu)
    gpus = gpus_per_node or [num_gpus]
    if gpus_per_trial < 1:
        per_gpu = math.floor(1 / gpus_per_trial + 1e-9)
        by_gpu = sum(per_gpu * math.floor(g + 1e-9) for g in gpus)
    else:
        by_gpu = sum(math.floor(g / gpus_per_trial + 1e-9) for g in gpus)
    return max(0, min(by_cpu, by_gpu))


def run_search(
    train_data: Dataset,
    val_data: Dataset,
    *,
    base: TrainConfig,
    space: dict,
    num_trials: int,
    deadline_wall: float | None,
    storage_dir: Path,
    gpus_per_trial: float | None = None,
    cpus_per_trial: float | None = None,
    ray_address: str | None = None,
    searcher: str = "random",
    grace_period: int = 2,
    resume: bool = False,
    seed: int = 0,
    verbose: int = 1,
) -> SearchOutcome:
    """Run ``num_trials`` sampled configurations with Ray Tune and collect the results."""
    # A checkpoint per validated epoch forces frequent state snapshots; that is intended.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Every report carries val_map; a trial that ends without one (it started after the deadline,
    # or its time ran out before a first validation) sends Tune only its final "done" result. Tune
    # means to accept that, but counts the flattened config keys as metrics and fails the whole
    # search (Ray 2.60 TuneController._validate_result_metrics); the leaderboard says "not run".
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    import ray
    from ray import tune

    from .scheduler import make_scheduler  # imports Ray

    started_ray = False
    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        started_ray = True
    try:
        resources = _resources(gpus_per_trial, cpus_per_trial)
        total = num_trials * math.prod(len(v["grid_search"]) for v in space.values()
                                       if isinstance(v, dict) and "grid_search" in v)
        concurrency = min(total, resources.pop("_concurrency"))
        # Each trial gets its share of the time, so that every sampled configuration runs.
        trial_seconds = None
        if deadline_wall is not None and total > concurrency:
            trial_seconds = (deadline_wall - time.time()) * concurrency / total
        fixed = base.to_dict()
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, train_data=train_data, val_data=val_data, base=fixed,
                                 deadline_wall=deadline_wall, trial_seconds=trial_seconds),
            resources,
        )
        storage_dir = Path(storage_dir).resolve()
        experiment = storage_dir / EXPERIMENT
        # Tune stops launching trials at the deadline (pending ones stay resumable); running
        # trials stop themselves between steps at the same deadline.
        budget = None if deadline_wall is None else max(1.0, deadline_wall - time.time())
        signature = _signature(space, num_trials, fixed)
        if resume and tune.Tuner.can_restore(str(experiment)):
            _check_same_search(storage_dir / SIGNATURE_FILE, signature)
            log.info("resuming the search in %s", experiment)
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=False)
            _set_time_budget(tuner, budget)
        elif resume:
            raise SearchError(f"resume=True but there is no search to resume in {experiment}")
        else:
            storage_dir.mkdir(parents=True, exist_ok=True)
            (storage_dir / SIGNATURE_FILE).write_text(json.dumps(signature, indent=1, sort_keys=True))
            first = default_point(space, base)  # the preset's default: tried first, never stopped early
            tuner = tune.Tuner(
                trainable,
                param_space=to_tune_domains(space),
                tune_config=tune.TuneConfig(
                    metric="val_map", mode="max", num_samples=num_trials, time_budget_s=budget,
                    search_alg=_searcher(searcher, seed, concurrency, first),
                    scheduler=make_scheduler(base.epochs, grace_period, trial_seconds or budget,
                                             queued=total > concurrency, protected=first),
                ),
                run_config=tune.RunConfig(
                    name=EXPERIMENT, storage_path=str(storage_dir), verbose=verbose,
                    failure_config=tune.FailureConfig(max_failures=0),
                    # The best epoch by val_map (what the leaderboard reports) and, apart from it,
                    # the latest (what a resumed trial continues from).
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="val_map",
                                                            checkpoint_score_order="max"),
                ),
            )
        results = tuner.fit()  # Ctrl-C: Tune stops the trials, saves its state and returns
        cut = "time limit" if deadline_wall is not None and time.time() >= deadline_wall - 1.0 else "interrupted"
        outcome = _collect(results, fixed, experiment, cut)
        outcome.gpus_per_trial = resources["gpu"]
        # Ctrl-C between two trials leaves no trial pending: count the trials, not only their statuses.
        outcome.interrupted = cut == "interrupted" and (
            len(results) < total or outcome.leaderboard["status"].astype(str).str.contains("interrupted").any())
        return outcome
    finally:
        if started_ray:
            ray.shutdown()


def _resources(gpus_per_trial: float | None, cpus_per_trial: float | None) -> dict:
    """Per-trial resources checked against the cluster, plus the concurrency they allow."""
    import ray

    cluster = ray.cluster_resources()
    num_cpus, num_gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    gpus = (1.0 if num_gpus >= 1 else 0.0) if gpus_per_trial is None else float(gpus_per_trial)
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise InputError(f"gpus_per_trial must be 0, a fraction below 1 or a whole number, got {gpus_per_trial}")
    if gpus > 0 and num_gpus < min(gpus, 1.0):
        raise SearchError(f"gpus_per_trial={gpus} but the Ray cluster has {num_gpus:g} GPUs: the trials would "
                          "wait forever; pass gpus_per_trial=0 to train on CPUs")
    per_node = [n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")] if gpus > 0 else None
    if gpus > 0:
        slots = max_concurrent_trials(10**6, num_gpus, 0, gpus, per_node)
        cpus = max(1.0, math.floor(num_cpus / max(1, slots))) if cpus_per_trial is None else float(cpus_per_trial)
    else:
        cpus = 1.0 if cpus_per_trial is None else float(cpus_per_trial)
    if cpus > num_cpus:
        raise SearchError(f"cpus_per_trial={cpus:g} but the Ray cluster has {num_cpus:g} CPUs")
    concurrency = max_concurrent_trials(num_cpus, num_gpus, cpus, gpus, per_node)
    return {"cpu": cpus, "gpu": gpus, "_concurrency": max(1, concurrency)}


def _searcher(name: str, seed: int, concurrency: int, first: dict | None):
    """The search algorithm; ``first`` (the preset's defaults) is the first configuration tried."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    points = [first] if first else None
    if name == "random":
        return BasicVariantGenerator(random_state=seed, max_concurrent=concurrency, points_to_evaluate=points)
    if name == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as exc:
            raise InputError('searcher="optuna" needs optuna: pip install "detect-automl[optuna]"') from exc
        return ConcurrencyLimiter(OptunaSearch(seed=seed, points_to_evaluate=points), max_concurrent=concurrency)
    raise InputError(f"searcher must be 'random' or 'optuna', got {name!r}")


def _collect(results, fixed: dict, experiment: Path, cut: str) -> SearchOutcome:
    from ray import tune

    trials = {trial.path: trial for trial in tune.ExperimentAnalysis(str(experiment)).trials}
    rows, history, checkpoints = [], {}, {}
    for result in results:
        trial = trials.get(result.path)
        trial_id = trial.trial_id if trial is not None else Path(result.path).name
        params = {**fixed, **(result.config or (trial.config if trial is not None else {}))}
        frame = result.metrics_dataframe
        records = [] if frame is None or "val_map" not in frame else frame.to_dict("records")
        history[trial_id] = [history_record(r) for r in records]
        seconds = float(records[-1].get("time_total_s", 0.0)) if records else 0.0
        rows.append(leaderboard_row(trial_id, params, history[trial_id], seconds, _status(result, records, params, trial, cut)))
        rows[-1]["node"] = str(records[-1].get("node_id", ""))[:12] if records else ""
        rows[-1]["device"] = str(records[-1].get("device", "")) if records else ""
        if result.best_checkpoints:
            checkpoints[trial_id] = (_best_checkpoint(result.best_checkpoints), params, rows[-1])
    board = sort_leaderboard(rows)
    outcome = SearchOutcome(board, history, experiment_path=experiment)
    best_id = select_best(board)
    if best_id is not None and best_id in checkpoints:
        checkpoint, params, row = checkpoints[best_id]
        with checkpoint.as_directory() as directory:
            saved = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        outcome.best_state = saved["state_dict"]
        outcome.best_config = TrainConfig.from_dict(params)
        outcome.best_metrics = {"map": row["val_map"], "map_50": row["val_map_50"], "trial_id": best_id}
    return outcome


def _best_checkpoint(kept: list) -> object:
    """The checkpoint of the best epoch (val mAP, ties by mAP@50) among those Tune kept."""
    return max(kept, key=lambda pair: (pair[1].get("val_map", -1.0), pair[1].get("val_map_50", -1.0)))[0]


def _signature(space: dict, num_trials: int, fixed: dict) -> dict:
    """A JSON description of what a search is asked, to compare a resume against."""
    values = {k: v for k, v in fixed.items() if k != "pretrained"}  # resolved per machine; not a choice
    return {"num_trials": int(num_trials), "space": {k: _describe(v) for k, v in sorted(space.items())},
            "fixed": json.loads(json.dumps(values, default=str))}


def _describe(value) -> object:
    """A search-space entry as JSON: plain values as they are, Ray Tune domains by kind and range."""
    if hasattr(value, "domain_str"):
        sampler = value.get_sampler() if hasattr(value, "get_sampler") else None
        return f"{type(value).__name__}{value.domain_str} {type(sampler).__name__}"
    return json.loads(json.dumps(value, default=str))


def _check_same_search(file: Path, signature: dict) -> None:
    """Refuse to resume a search with another space, number of trials or fixed values."""
    if not file.is_file():
        return  # a search started before this check existed
    before = json.loads(file.read_text())
    changed = [key for key in ("num_trials", "space") if before.get(key) != signature[key]]
    changed += [f"hyperparameter {k!r}" for k in sorted(set(before.get("fixed", {})) | set(signature["fixed"]))
                if before.get("fixed", {}).get(k) != signature["fixed"].get(k)]
    if changed:
        raise SearchError(f"resume=True continues the search in {file.parent} as it was asked; these differ now: "
                          f"{', '.join(changed)} (before: {json.dumps({k: before.get(k) for k in ('num_trials', 'space')})}). "
                          "Ask the same again to resume it, or start a new search in another output_dir.")


def _set_time_budget(tuner, budget: float | None) -> None:
    """Apply this call's time budget to a restored Tuner (Tune restores the first call's budget).

    ``Tuner.restore`` has no argument for it; its TuneConfig is where Tune reads it when ``fit``
    starts. The trials themselves stop at this call's deadline either way.
    """
    tune_config = getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)
    if tune_config is None:
        log.warning("cannot apply the new time_limit to the resumed search's scheduler; trials still stop at it")
        return
    tune_config.time_budget_s = budget


def _status(result, records: list[dict], params: dict, trial, cut: str) -> str:
    """completed / early-stopped / stopped (time limit) / interrupted / not run (...) / failed: why."""
    if result.error is not None:
        lines = [line for line in str(result.error).strip().splitlines() if line.strip()]
        last = (lines[-1] if lines else type(result.error).__name__)[:200]
        return f"diverged: {last}" if "TrainingError" in last else f"failed: {last}"
    if trial is not None and trial.status in ("PENDING", "RUNNING", "PAUSED"):
        return cut if records else f"not run ({cut})"
    if not records:
        return "not run (time limit)"
    if records[-1].get("time_limit_hit"):
        return "stopped (time limit)"
    status = "completed" if int(records[-1].get("epoch", 0)) >= int(params["epochs"]) else "early-stopped"
    used = records[-1].get("batch_size_used")
    if used is not None and int(used) != int(params["batch_size"]):
        status += f" (out of memory: batch {int(used)})"
    return status
