"""Ray Tune search: runs a SearchPlan (ASHA, time budget, cluster); collects the leaderboard and the best checkpoint."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ..budget import Budget
from ..config import TrainConfig
from ..data.dataset import Dataset
from ..errors import InputError, SearchError
from ..leaderboard import TrialStatus, end_status, history_record, leaderboard_row, select_best, sort_leaderboard
from ..loggers import LOGS
from .plan import Hardware, SearchPlan, SearchRequest, trial_resources
from .space import to_tune_domains
from .trainable import CHECKPOINT_FILE, CHECKPOINT_SCORE, SharedData, train_trial

__all__ = ["SearchOutcome", "run_search"]

log = logging.getLogger(__name__)

EXPERIMENT = "search"
GRACE_EPOCHS = 2
"""ASHA's first rung without a time budget (epochs)."""
WORKERS_DIR = "workers"
"""Under the trials directory: the Ray Train runs of data-parallel trials (their checkpoints
move to Tune's trial directories as they are reported)."""
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


def run_search(train_data: Dataset, val_data: Dataset, request: SearchRequest, plan: SearchPlan,
               budget: Budget | None) -> SearchOutcome:
    """Run the trials ``plan`` carries with Ray Tune (the request's first points first) and collect
    the leaderboard, histories and the best trial's weights."""
    # A checkpoint per validated epoch forces frequent state snapshots; that is intended.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Every report carries val_map; a trial that ends without one (it started after the deadline,
    # or its time ran out before a first validation) sends Tune only its final "done" result. Tune
    # means to accept that, but counts the flattened config keys as metrics and fails the whole
    # search (Ray 2.60 TuneController._validate_result_metrics); the leaderboard says "not run".
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    import ray
    from ray import tune

    from .callbacks import tune_callbacks  # imports Ray
    from .scheduler import make_scheduler  # imports Ray

    r = request
    storage_dir = (r.output / "trials").resolve()
    experiment = storage_dir / EXPERIMENT
    fixed = r.base.to_dict()
    signature = _signature(r.space, r.num_trials, fixed)
    # Before Ray starts, so that they fail at once: a resume that cannot go on, a missing Ray Train V2.
    restoring = r.resume and tune.Tuner.can_restore(str(experiment))
    if restoring:
        _check_same_search(storage_dir / SIGNATURE_FILE, signature)
    elif r.resume:
        raise SearchError(f"resume=True but there is no search to resume in {experiment}")
    workers = plan.workers_per_trial
    if workers > 1:
        _require_ray_train_v2(workers)
    started_ray = False
    if not ray.is_initialized():
        if r.ray_address:
            ray.init(address=r.ray_address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        started_ray = True
    try:
        # The plan's resources, checked against what Ray sees (a trial asking for more waits forever).
        trial_resources(Hardware.of_ray(), plan.gpus_per_trial, plan.cpus_per_trial)
        resources = {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial}
        if workers > 1:  # the trial only waits for its Ray Train workers, which hold its CPUs and GPUs
            from .data_parallel import driver_resources  # imports Ray Train

            resources = driver_resources()
        first = r.points[0] if r.points else None  # the preset's default: its slot for the whole search
        trainable = tune.with_resources(
            # The datasets go into the object store once; trials and workers get the reference.
            tune.with_parameters(train_trial, data=SharedData(ray.put((train_data, val_data))), base=fixed,
                                 budget=budget, trial_seconds=plan.trial_seconds, default=first,
                                 default_seconds=plan.default_seconds, workers=workers,
                                 resources=(plan.cpus_per_trial, plan.gpus_per_trial),
                                 storage=storage_dir / WORKERS_DIR),
            resources,
        )
        # Tune stops launching trials at the deadline (pending ones stay resumable); running
        # trials stop themselves between steps at the same deadline.
        time_budget = None if budget is None else max(1.0, budget.remaining())
        if restoring:
            log.info("resuming the search in %s", experiment)
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=False)
            _set_time_budget(tuner, time_budget)
        else:
            storage_dir.mkdir(parents=True, exist_ok=True)
            (storage_dir / SIGNATURE_FILE).write_text(json.dumps(signature, indent=1, sort_keys=True))
            tuner = tune.Tuner(
                trainable,
                param_space=to_tune_domains(r.space),
                tune_config=tune.TuneConfig(
                    metric="val_map", mode="max", num_samples=max(1, plan.num_run // r.grid),
                    time_budget_s=time_budget,
                    search_alg=_searcher(r.searcher, r.seed, plan.concurrency, r.points[:plan.num_run]),
                    scheduler=make_scheduler(r.base.epochs, GRACE_EPOCHS, plan.trial_seconds,
                                             queued=plan.num_run > plan.concurrency, protected=first),
                ),
                run_config=tune.RunConfig(
                    name=EXPERIMENT, storage_path=str(storage_dir), verbose=1 if r.progress else 0,
                    failure_config=tune.FailureConfig(max_failures=0),
                    # A resumed search logs with the callbacks it started with (Tune restores them).
                    callbacks=tune_callbacks(r.loggers, r.output / LOGS, fixed),
                    # The best epoch by val_map (what the leaderboard reports) and, apart from it,
                    # the latest (what a resumed trial continues from).
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=CHECKPOINT_SCORE,
                                                            checkpoint_score_order="max"),
                ),
            )
        results = tuner.fit()  # Ctrl-C: Tune stops the trials, saves its state and returns
        cut = "time limit" if budget is not None and budget.expired(1.0) else "interrupted"
        outcome = _collect(results, fixed, experiment, cut, early_stopping=plan.num_run > plan.concurrency)
        outcome.gpus_per_trial = plan.gpus_per_trial
        # Ctrl-C between two trials leaves no trial pending: count the trials, not only their statuses.
        outcome.interrupted = cut == "interrupted" and (
            len(results) < plan.num_run or (outcome.leaderboard["status"] == TrialStatus.INTERRUPTED.value).any())
        return outcome
    finally:
        if started_ray:
            ray.shutdown()


def _searcher(name: str, seed: int, concurrency: int, points: list[dict]):
    """The search algorithm; ``points`` (the preset's default, then its portfolio) are tried first."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    points = list(points) or None
    if name == "random":
        return BasicVariantGenerator(random_state=seed, max_concurrent=concurrency, points_to_evaluate=points)
    if name == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as exc:
            raise InputError('searcher="optuna" needs optuna: pip install "detect-automl[optuna]"') from exc
        return ConcurrencyLimiter(OptunaSearch(seed=seed, points_to_evaluate=points), max_concurrent=concurrency)
    raise InputError(f"searcher must be 'random' or 'optuna', got {name!r}")


def _collect(results, fixed: dict, experiment: Path, cut: str, early_stopping: bool) -> SearchOutcome:
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
        status, detail = _status(result, records, params, trial, cut, early_stopping)
        rows.append(leaderboard_row(trial_id, params, history[trial_id], seconds, status, detail))
        # Short node ids; a data-parallel trial's every node, rank 0's first.
        rows[-1]["node"] = ",".join(n[:12] for n in str(records[-1].get("node_id", "")).split(",")) if records else ""
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
    """The checkpoint of the best epoch among those Tune kept (the best and the latest)."""
    return max(kept, key=lambda pair: pair[1].get(CHECKPOINT_SCORE, -2.0))[0]


def _signature(space: dict, num_trials: int, fixed: dict) -> dict:
    """A JSON description of what a search is asked, to compare a resume against."""
    # pretrained is resolved per machine, epochs planned from the time limit: neither is a choice.
    values = {k: v for k, v in fixed.items() if k not in ("pretrained", "epochs")}
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
        asked = json.dumps({k: before.get(k) for k in ("num_trials", "space")})
        raise SearchError(f"resume=True continues the search in {file.parent} as it was asked; these differ now: "
                          f"{', '.join(changed)} (before: {asked}). "
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


def _status(result, records: list[dict], params: dict, trial, cut: str,
            early_stopping: bool = True) -> tuple[TrialStatus, str]:
    """A trial's status and detail from its Tune result and reports. A trial that ended before
    its epochs without a time-limited last report was stopped by ASHA when the scheduler could
    stop trials (``early_stopping``); otherwise its time ended with an epoch it could not validate."""
    if result.error is not None:
        lines = [line for line in str(result.error).strip().splitlines() if line.strip()]
        last = (lines[-1] if lines else type(result.error).__name__)[:200]
        if _lost_worker(result.error):
            return TrialStatus.FAILED, f"lost its Ray worker (its node died or its process was killed): {last}"
        return (TrialStatus.DIVERGED if "TrainingError" in last else TrialStatus.FAILED), last
    if trial is not None and trial.status in ("PENDING", "RUNNING", "PAUSED"):
        stopped = TrialStatus.INTERRUPTED if cut == "interrupted" else TrialStatus.COMPLETED
        return (stopped, cut) if records else (TrialStatus.NOT_RUN, cut)
    if not records:
        return TrialStatus.NOT_RUN, "time limit"
    last = records[-1]
    epochs = params.get("epochs")
    stopped = "converged" if last.get("converged") else "time_limit" if last.get("time_limit_hit") else \
        "epochs" if epochs is not None and int(last.get("epoch", 0)) >= int(epochs) else None
    if stopped is None and early_stopping:
        return TrialStatus.EARLY_STOPPED, ""
    stopped = stopped or "time_limit"
    return end_status(stopped, last.get("batch_size_used"), params["batch_size"])


def _lost_worker(error: BaseException) -> bool:
    """Whether a trial failed because Ray lost the process it ran in (a node died, the OOM killer)."""
    from ray.exceptions import NodeDiedError, RayActorError, WorkerCrashedError

    lost = (RayActorError, NodeDiedError, WorkerCrashedError)
    return isinstance(error, lost) or isinstance(getattr(error, "__cause__", None), lost)


def _require_ray_train_v2(workers: int) -> None:
    """Data-parallel trials drive Ray Train V2 (the default from Ray 2.51; from 2.43 with
    ``RAY_TRAIN_V2_ENABLED=1``): say so before any trial starts, instead of failing in each."""
    try:
        from ray.train.v2._internal.constants import is_v2_enabled
    except ImportError:
        enabled = False
    else:
        enabled = is_v2_enabled()
    if not enabled:
        import ray

        raise SearchError(f"workers_per_trial={workers} needs Ray Train V2: upgrade ray (>= 2.51, installed "
                          f"{ray.__version__}), or set RAY_TRAIN_V2_ENABLED=1 (ray >= 2.43)")
