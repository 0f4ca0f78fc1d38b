"""fit(): the one call that turns a dataset into a tuned, saved ObjectDetector."""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from tqdm.auto import tqdm

from .budget import Budget, time_limit_holding, wrap_up_seconds
from .config import TrainConfig
from .data.checks import check_dataset
from .data.dataset import Dataset
from .data.policy import DEFAULT_ON_ERROR, data_report
from .engine.trial import run_trial
from .errors import DatasetError, InputError, SearchError
from .leaderboard import TrialStatus, end_status, history_record, leaderboard_row, sort_leaderboard
from .loggers import LOGS, RunLogger, check_loggers
from .models import build, resolve_pretrained
from .predictor import ObjectDetector
from .tune.plan import SearchPlan, SearchRequest, plan_search, trial_workers
from .tune.portfolio import portfolio, search_points
from .tune.space import is_searched, preset_config, preset_space

__all__ = ["fit"]

log = logging.getLogger(__name__)


def fit(
    train: Dataset,
    val: Dataset | None = None,
    *,
    time_limit: float | None = None,
    num_trials: int = 1,
    presets: str = "medium_quality",
    search_space: Mapping[str, Any] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    gpus_per_trial: float | None = None,
    cpus_per_trial: float | None = None,
    ray_address: str | None = None,
    searcher: str = "random",
    output_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    on_error: str = DEFAULT_ON_ERROR,
    loggers: str | Iterable[str] | None = None,
    workers_per_trial: int | None = None,
) -> ObjectDetector:
    """Search detectors and hyperparameters on ``train``; keep, save and return the best.

    It reads as its steps: check the data, configure (preset, regime, the user's values), plan
    (how many trials the budget carries), run, keep the best, save. With ``num_trials=1`` (and
    no search space, cluster or resume) the preset's default trains in this process; otherwise a
    Ray Tune search runs the default, then the preset's portfolio, then sampled configurations,
    in parallel, stops weak ones early (ASHA) and keeps the best by validation mAP. With a
    ``time_limit``, each run plans its schedule to end at its deadline (``epochs`` is then only a
    cap, when given), and the search plan runs fewer trials than asked when the budget cannot
    train each for long enough to rank it (they show as ``not run`` / ``budget``, with a warning).

    Args:
        train: the training data.
        val: validation data (ranks epochs and trials); without it a deterministic
            ``val_fraction`` of ``train`` is held out (seeded by ``seed``).
        time_limit: seconds for the whole call, restoring and saving the best included; training
            is planned to use all of it.
        num_trials: configurations to train at most (the default, the portfolio, then samples).
        presets: "fast", "medium_quality" or "best_quality": defaults and search space for the
            hardware found.
        search_space: overrides of the preset's space: Ray Tune domains, lists (a choice),
            ``("loguniform"|"uniform"|"randint", low, high)``, or fixed values.
        hyperparameters: fixed values (any TrainConfig field), never searched.
        gpus_per_trial: GPUs per trial (fractions such as 0.25 share a GPU); default 1 with
            GPUs, else 0.
        cpus_per_trial: CPUs per trial; default CPUs / trials on a CPU-only machine (1 per trial on
            a cluster of CPU nodes), else CPUs / GPU slots.
            Left to the plan on a CPU-only machine, the default trains alone when sharing the
            cores would slow it (docs/search.md, "The plan"); given, the trials share them.
        ray_address: address of an existing Ray cluster (its nodes must see the images and
            ``output_dir``); default a local Ray started and stopped here.
        searcher: "random" (default) or "optuna" (needs optuna).
        output_dir: the saved model goes to ``output_dir/model``, trials to ``output_dir/trials``;
            default ``runs/detect_automl-<time>``.
        val_fraction: share of ``train`` held out when ``val`` is None.
        seed: seeds the split, the sampling, initialisation, data order and augmentation.
        resume: continue an interrupted search in ``output_dir`` instead of starting afresh.
        progress: show progress (bars and per-epoch lines in-process; Tune's table otherwise).
        on_error: what the dataset errors found by the up-front check (:func:`detect_automl.inspect`,
            header-only, seconds) do: ``"auto"`` (default): isolated bad images and boxes are left
            out, with one warning listing each, but a systematic problem (over 10 % of the images
            or boxes bad, or all) raises; ``"raise"``: any error raises; ``"skip"``: left out
            whatever the share. What was left out is saved as ``data_report.json`` with the model.
        loggers: any of "tensorboard", "csv", "mlflow": each run's per-epoch loss, learning rate
            and val mAP / mAP@50, and its configuration, logged under ``output_dir/logs`` as it
            trains (Ray Tune's callbacks in a search; the same writers in this process): see
            :mod:`detect_automl.loggers` for the layout.
        workers_per_trial: data-parallel workers per trial (Ray Train, DistributedDataParallel:
            NCCL on GPUs, gloo on CPUs; they may span the nodes of a cluster), splitting the
            trial's ``gpus_per_trial`` and ``cpus_per_trial`` evenly (one GPU, or one CPU, each
            by default). ``batch_size`` is per worker, so a step sees ``workers_per_trial`` times
            as many images at the same learning rate. Default: one per GPU for a whole
            ``gpus_per_trial`` of 2 or more, else 1 (trains in the trial's own process).

    Returns:
        The best ObjectDetector, already saved (``detector.path``).

    Raises:
        DatasetError: the data has errors that ``on_error`` does not skip (the message is the
            report), before any training.
        SearchError: every trial failed (the message lists why), or resources are missing.
        InputError: an unknown logger, or one whose package is missing (the message says what to install).

    >>> detector = fit(Dataset("datasets/raccoon", split="train"), time_limit=600, num_trials=4)  # doctest: +SKIP
    """
    start = time.time()
    if int(num_trials) < 1:
        raise InputError(f"num_trials must be >= 1, got {num_trials}")
    workers_per_trial, gpus_per_trial, cpus_per_trial = trial_workers(workers_per_trial, gpus_per_trial, cpus_per_trial)
    searching = num_trials > 1 or bool(search_space) or ray_address is not None or resume or workers_per_trial > 1
    loggers = check_loggers(loggers)
    wrap_up_seconds(time_limit, searching)  # refuses a time_limit too short to save a model
    train, val, bad_data = _check_data(train, val, on_error, searching, val_fraction, seed)
    gpu = torch.cuda.is_available() if gpus_per_trial is None else gpus_per_trial > 0
    base, space, tuning = _configure(presets, gpu, dict(hyperparameters or {}), dict(search_space or {}), time_limit,
                                     seed, searching)
    output = (Path(output_dir) if output_dir is not None
              else Path("runs") / f"detect_automl-{datetime.now():%Y%m%d-%H%M%S}")
    total = None if time_limit is None else Budget.from_seconds(time_limit, start)
    if not searching:
        device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
        detector = _train_one(train, val, base, device, _minus(total, wrap_up_seconds(time_limit, False)), progress,
                              _run_logger(loggers, output, base))
    else:
        request = SearchRequest(
            base=base, space=space, points=search_points(space, base, portfolio(presets, gpu, tuning)),
            num_trials=num_trials, gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial,
            ray_address=ray_address, searcher=searcher, seed=seed, resume=resume, output=output, progress=progress,
            loggers=loggers, workers_per_trial=workers_per_trial)
        detector = _search(train, val, request, total, time_limit)
    return _save(detector, output / "model", bad_data, progress, start, time_limit)


def _check_data(train: Dataset, val: Dataset | None, on_error: str, searching: bool, val_fraction: float,
                seed: int) -> tuple[Dataset, Dataset, dict]:
    """Step 1: the data checks (``on_error``), the report of what was left out, the val split."""
    train = check_dataset(train, on_error)
    val = check_dataset(val, on_error) if val is not None else None
    bad_data = data_report(on_error, train, val)
    if len(train) == 0:
        raise DatasetError("the training dataset has no images")
    if searching and val is not None and len(val) == 0:
        raise DatasetError("the validation dataset has no images: a search ranks its trials by validation mAP")
    if val is None:
        if searching and len(train) < 2:
            raise DatasetError("a search needs at least 2 training images to hold one out for validation")
        train, val = train.split(val_fraction, seed=seed)
    return train, val, bad_data


def _configure(presets: str, gpu: bool, hyperparameters: dict, search_space: dict, time_limit: float | None,
               seed: int, searching: bool) -> tuple[TrainConfig, dict, bool]:
    """Step 2: the preset's configuration for the hardware and regime, merged once with the user's
    values; the searched space; the regime. The regime (COCO weights or from scratch) is decided
    here, once: ``pretrained="auto"`` becomes "coco" when the weights of every model that can
    train (the fixed one, or the searched choices) can be had.

    With a ``time_limit``, training is planned to it: ``epochs`` is a cap only when the user sets it.
    """
    scratch = preset_config(presets, gpu)
    space = {**preset_space(presets, gpu), **search_space}
    model = space.get("model", scratch.model)
    if "model" in hyperparameters or not (searching and is_searched(model)):
        models = [hyperparameters.get("model", model if not is_searched(model) else scratch.model)]
    else:
        models = _choices(model)
    pretrained = resolve_pretrained(hyperparameters.get("pretrained", scratch.pretrained), models)
    tuning = _finetuning(pretrained)
    base = preset_config(presets, gpu, tuning).replace(seed=seed, pretrained=pretrained)
    space = {**preset_space(presets, gpu, tuning), **search_space}
    if time_limit is not None and "epochs" not in hyperparameters:
        base = base.replace(epochs=None)
    fixed = {k: v for k, v in space.items() if not is_searched(v) and k != "pretrained"}
    fixed.update({k: v for k, v in hyperparameters.items() if k != "pretrained"})
    return base.replace(**fixed), {k: v for k, v in space.items() if k not in fixed and k != "pretrained"}, tuning


def _choices(value) -> list:
    """The values a searched entry can take: a list's, a grid's or a Ray Tune choice's."""
    if isinstance(value, dict) and "grid_search" in value:
        return list(value["grid_search"])
    return list(getattr(value, "categories", value))


def _finetuning(pretrained: str | None) -> bool:
    """COCO detector weights or a weights file: the fine-tuning regime (presets and portfolio)."""
    return pretrained not in (None, "imagenet")


def _time_limit_for(search_seconds: float, total: Budget, time_limit: float) -> float:
    """The smallest ``time_limit`` whose search budget, after what this fit already spent (data
    checks, the probe) and its reserve for the wrap-up, holds ``search_seconds``."""
    return time_limit_holding(search_seconds + float(time_limit) - total.remaining())


def _minus(budget: Budget | None, seconds: float) -> Budget | None:
    return None if budget is None else budget.minus(seconds)


def _run_logger(loggers: tuple[str, ...], output: Path, config: TrainConfig) -> RunLogger | None:
    """The writers of a run in this process (trial "0"), or None without loggers."""
    return RunLogger(loggers, output / LOGS, "0", config.to_dict()) if loggers else None


def _train_one(train: Dataset, val: Dataset, config: TrainConfig, device: torch.device, budget: Budget | None,
               progress: bool, logger: RunLogger | None = None, not_run: list[dict] = ()) -> ObjectDetector:
    """Step 3, one configuration: train it in this process, on every CPU or the GPU (``not_run``:
    the leaderboard rows of the trials a search plan left out)."""
    def report(record: dict, state) -> None:
        if progress:
            tqdm.write(_epoch_line(record))
        if logger is not None:
            logger.log_epoch(record)

    with logger or nullcontext():
        outcome = run_trial(config, train, val, device=device, budget=budget, on_epoch=report, progress=progress)
    history = outcome.result.history
    rows = [leaderboard_row("0", config.to_dict(), history, outcome.seconds, *end_status(
        outcome.result.stopped, history[-1]["batch_size"] if history else None, config.batch_size))]
    return ObjectDetector(outcome.detector, train.classes, config,
                          leaderboard=sort_leaderboard(rows + list(not_run)),
                          history={"0": [history_record(r) for r in outcome.result.history]},
                          metrics=outcome.result.best_metrics)


def _save(detector: ObjectDetector, path: Path, bad_data: dict, progress: bool, start: float,
          time_limit: float | None) -> ObjectDetector:
    """Step 5: save the kept detector with the data report; say how the budget went."""
    detector.data_report = bad_data
    detector.save(path)  # sets detector.path
    if progress:
        used = f"in {time.time() - start:.0f} s" + ("" if time_limit is None else f" of {time_limit:.0f}")
        board = detector.leaderboard()
        if (board["status"] == TrialStatus.CONVERGED.value).any():
            used += " (converged early: val mAP stopped improving)"
        tqdm.write(f"saved the best model ({detector.model_name}, val mAP {detector.metrics.get('map') or 0:.3f}) "
                   f"to {detector.path} {used}")
    return detector


def _epoch_line(record: dict) -> str:
    """One line of progress for an epoch: its loss and validation (with how much of it ran)."""
    line = f"epoch {record['epoch']}: loss {record['loss']:.3f}"
    if "val_map" in record:
        line += f", val mAP {record['val_map']:.3f} (mAP@50 {record['val_map_50']:.3f})"
        if record.get("val_images") is not None and record["val_images"] < record.get("val_images_total", 0):
            line += f" on {record['val_images']} of {record['val_images_total']} images (time limit)"
    if record.get("converged"):
        line += "; converged (no better val mAP for the last validations)"
    return line


def _search(train: Dataset, val: Dataset, request: SearchRequest, total: Budget | None,
            time_limit: float | None) -> ObjectDetector:
    """Steps 3-4 for a search: plan it, run the trials the plan carries, keep and continue the best."""
    from .tune.leader import continue_best
    from .tune.search import run_search

    budget = _minus(total, wrap_up_seconds(time_limit, True))
    plan = plan_search(request, train, budget)
    needed = None if plan.needed_seconds is None else _time_limit_for(plan.needed_seconds, total, time_limit)
    in_process = plan.num_run == 1 and request.ray_address is None and not request.resume and bool(request.points) \
        and request.workers_per_trial == 1
    if request.progress:
        tqdm.write(plan.describe(needed, in_process))
    if plan.not_run:
        warnings.warn(f"{plan.num_run} of the {plan.asked} trials asked run in time_limit={time_limit:.0f} s: "
                      f"{plan.not_run} not run ({plan.not_run_reason}): {plan.why_not_run(needed)}", stacklevel=3)
    if in_process:
        config = request.base.replace(**request.points[0])
        device = torch.device("cuda" if plan.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu")
        deadline = _minus(total, wrap_up_seconds(time_limit, False))
        return _train_one(train, val, config, device, deadline, request.progress,
                          _run_logger(request.loggers, request.output, config), not_run=_not_run_rows(request, plan))
    outcome = run_search(train, val, request, plan, budget)
    if outcome.best_state is None:
        reasons = "\n".join(f"  trial {row.trial_id} ({row.model}): {row.status}: {row.detail}"
                            for row in outcome.leaderboard.itertuples())
        raise SearchError(f"no trial produced a model (trials in {outcome.experiment_path}):\n"
                          f"{reasons or '  none ran'}")
    if outcome.interrupted:
        log.warning("the search was interrupted: the best finished trial is saved to %s; continue the search "
                    "with fit(..., output_dir=%r, resume=True)", request.output / "model", str(request.output))
    config = outcome.best_config
    detector = build(config.model, len(train.classes), pretrained=config.pretrained, image_size=config.image_size,
                     load_pretrained=False)
    detector.load_state_dict(outcome.best_state)
    board, metrics = outcome.leaderboard, outcome.best_metrics
    if total is not None and not request.resume and request.workers_per_trial == 1:
        # Ray has shut down by now: only the save is left to reserve time for. (A data-parallel
        # trial is not continued: this process alone would train it on one device.)
        board, metrics = continue_best(detector, config, train, val, board, outcome.history, metrics,
                                       total.minus(wrap_up_seconds(time_limit, False)), time_limit, request.progress,
                                       outcome.gpus_per_trial)
    board = sort_leaderboard(board.to_dict("records") + _not_run_rows(request, plan))
    return ObjectDetector(detector, train.classes, config, leaderboard=board, history=outcome.history,
                          metrics=metrics)


def _not_run_rows(request: SearchRequest, plan: SearchPlan) -> list[dict]:
    """Leaderboard rows for the trials the plan left out (``not run``, detail the plan's reason):
    portfolio entries, then samples (their searched values unknown: None)."""
    unknown = {key: None for key in request.space}
    planned = list(request.points[plan.num_run:]) + [unknown] * request.num_trials
    return [leaderboard_row(f"not-run-{i}", {**request.base.to_dict(), **point}, [], 0.0, TrialStatus.NOT_RUN,
                            plan.not_run_reason) for i, point in enumerate(planned[:plan.not_run], start=1)]
