"""fit(): the one call that turns a dataset into a tuned, saved ObjectDetector."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .data.checks import check_dataset
from .data.dataset import Dataset
from .data.policy import DEFAULT_ON_ERROR, data_report
from .engine.trial import run_trial
from .errors import DatasetError, InputError, SearchError, WeightsError
from .leaderboard import history_record, leaderboard_row, sort_leaderboard
from .models import build, get_spec
from .models.weights import ensure_weights
from .predictor import ObjectDetector
from .tune.space import is_searched, preset_config, preset_space

__all__ = ["fit"]

log = logging.getLogger("detect_automl")


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
) -> ObjectDetector:
    """Search detectors and hyperparameters on ``train``; keep, save and return the best.

    With ``num_trials=1`` (and no search space, cluster or resume) one configuration trains in
    this process; otherwise a Ray Tune search runs ``num_trials`` sampled configurations in
    parallel, stops weak ones early (ASHA) and keeps the best by validation mAP.

    Args:
        train: the training data.
        val: validation data (ranks epochs and trials); without it a deterministic
            ``val_fraction`` of ``train`` is held out (seeded by ``seed``).
        time_limit: seconds for the whole call, restoring and saving the best included.
        num_trials: configurations to sample and train.
        presets: "fast", "medium_quality" or "best_quality": defaults and search space for the
            hardware found.
        search_space: overrides of the preset's space: Ray Tune domains, lists (a choice),
            ``("loguniform"|"uniform"|"randint", low, high)``, or fixed values.
        hyperparameters: fixed values (any TrainConfig field), never searched.
        gpus_per_trial: GPUs per trial (fractions such as 0.25 share a GPU); default 1 with
            GPUs, else 0.
        cpus_per_trial: CPUs per trial; default 1 on CPU-only machines, else CPUs / GPU slots.
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

    Returns:
        The best ObjectDetector, already saved (``detector.path``).

    Raises:
        DatasetError: the data has errors that ``on_error`` does not skip (the message is the
            report), before any training.
        SearchError: every trial failed (the message lists why), or resources are missing.

    >>> detector = fit(Dataset("datasets/raccoon", split="train"), time_limit=600, num_trials=4)  # doctest: +SKIP
    """
    start_wall = time.time()
    if int(num_trials) < 1:
        raise InputError(f"num_trials must be >= 1, got {num_trials}")
    train = check_dataset(train, on_error)
    val = check_dataset(val, on_error) if val is not None else None
    bad_data = data_report(on_error, train, val)
    if len(train) == 0:
        raise DatasetError("the training dataset has no images")
    searching = num_trials > 1 or bool(search_space) or ray_address is not None or resume
    if searching and val is not None and len(val) == 0:
        raise DatasetError("the validation dataset has no images: a search ranks its trials by validation mAP")
    reserve = _reserve(time_limit, searching)
    deadline_wall = None if time_limit is None else start_wall + float(time_limit) - reserve
    if val is None:
        if searching and len(train) < 2:
            raise DatasetError("a search needs at least 2 training images to hold one out for validation")
        train, val = train.split(val_fraction, seed=seed)
    gpu = torch.cuda.is_available() if gpus_per_trial is None else gpus_per_trial > 0
    base = preset_config(presets, gpu=gpu).replace(seed=seed)
    output = Path(output_dir) if output_dir is not None else Path("runs") / f"detect_automl-{datetime.now():%Y%m%d-%H%M%S}"
    if searching:
        request = _SearchRequest(
            space=preset_space(presets, gpu), search_space=dict(search_space or {}),
            hyperparameters=dict(hyperparameters or {}), num_trials=num_trials, time_limit=time_limit,
            deadline_wall=deadline_wall, output=output, gpus_per_trial=gpus_per_trial,
            cpus_per_trial=cpus_per_trial, ray_address=ray_address, searcher=searcher, seed=seed, resume=resume,
            progress=progress)
        detector = _search(train, val, base, request)
    else:
        config = base.replace(**dict(hyperparameters or {}))
        config = config.replace(pretrained=_resolve_auto(config.pretrained, [config.model]))
        device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
        detector = _single(train, val, config, deadline_wall, device, progress)
    detector.data_report = bad_data
    detector.path = detector.save(output / "model")
    if progress:
        tqdm.write(f"saved the best model ({detector.model_name}, val mAP {detector.metrics.get('map') or 0:.3f}) "
                   f"to {detector.path} in {time.time() - start_wall:.0f} s")
    return detector


def _resolve_auto(pretrained, models: list[str]):
    """``pretrained="auto"`` -> "coco" when every candidate model's COCO weights can be had (cached
    or downloaded once, here, before any trial starts), else None with one warning saying why."""
    if pretrained != "auto":
        return pretrained
    try:
        for name in models:
            ensure_weights(get_spec(name).coco_weights)
    except WeightsError as exc:
        warnings.warn(f"{exc}\nTraining from scratch instead: expect a much lower mAP than with pretrained "
                      "weights.", stacklevel=3)
        return None
    return "coco"


def _reserve(time_limit: float | None, searching: bool) -> float:
    """Seconds kept back from ``time_limit`` for restoring and saving the best (and stopping Ray)."""
    if time_limit is None:
        return 0.0
    # Measured: Ray start ~3-6 s, Tune's wrap-up and shutdown ~2-10 s (more with GPU trials).
    reserve = min(60.0, 8.0 + 0.04 * float(time_limit)) if searching else 3.0
    if float(time_limit) <= reserve + 1.0:
        raise InputError(f"time_limit={time_limit} s is too short: at least {reserve + 1.0:.0f} s are needed")
    return reserve


def _single(train: Dataset, val: Dataset, config: TrainConfig, deadline_wall: float | None,
            device: torch.device, progress: bool) -> ObjectDetector:
    def report(record: dict, state) -> None:
        if progress:
            tqdm.write(_epoch_line(record))

    deadline = None if deadline_wall is None else time.monotonic() + (deadline_wall - time.time())
    outcome = run_trial(config, train, val, device=device, deadline=deadline, on_epoch=report, progress=progress)
    row = leaderboard_row("0", config.to_dict(), outcome.result.history, outcome.seconds, _status(outcome.result))
    return ObjectDetector(outcome.detector, train.classes, config, leaderboard=sort_leaderboard([row]),
                          history={"0": [history_record(r) for r in outcome.result.history]},
                          metrics=outcome.result.best_metrics)


def _epoch_line(record: dict) -> str:
    """One line of progress for an epoch: its loss and validation (with how much of it ran)."""
    line = f"epoch {record['epoch']}: loss {record['loss']:.3f}"
    if "val_map" in record:
        line += f", val mAP {record['val_map']:.3f} (mAP@50 {record['val_map_50']:.3f})"
        if record.get("val_images") is not None and record["val_images"] < record.get("val_images_total", 0):
            line += f" on {record['val_images']} of {record['val_images_total']} images (time limit)"
    return line


def _status(result) -> str:
    """Leaderboard status of a run trained in this process (TrainResult.stopped)."""
    return "stopped (time limit)" if result.stopped == "time_limit" else "completed"


@dataclass(frozen=True)
class _SearchRequest:
    """What ``fit`` asks of a Ray Tune search (its arguments, with the preset's space resolved)."""

    space: dict
    search_space: dict
    hyperparameters: dict
    num_trials: int
    time_limit: float | None
    deadline_wall: float | None
    output: Path
    gpus_per_trial: float | None
    cpus_per_trial: float | None
    ray_address: str | None
    searcher: str
    seed: int
    resume: bool
    progress: bool


def _search(train: Dataset, val: Dataset, base: TrainConfig, request: _SearchRequest) -> ObjectDetector:
    from .tune.search import run_search

    r = request
    space = {**r.space, **r.search_space}
    fixed = {k: v for k, v in space.items() if not is_searched(v)}
    fixed.update(r.hyperparameters)
    space = {k: v for k, v in space.items() if k not in fixed}
    base = base.replace(**fixed)
    models = space.get("model", [base.model])
    base = base.replace(pretrained=_resolve_auto(base.pretrained, list(getattr(models, "categories", models))))
    outcome = run_search(train, val, base=base, space=space, num_trials=r.num_trials, deadline_wall=r.deadline_wall,
                         storage_dir=r.output / "trials", gpus_per_trial=r.gpus_per_trial,
                         cpus_per_trial=r.cpus_per_trial, ray_address=r.ray_address, searcher=r.searcher,
                         resume=r.resume, seed=r.seed, verbose=1 if r.progress else 0)
    if outcome.best_state is None:
        reasons = "\n".join(f"  trial {row.trial_id} ({row.model}): {row.status}"
                            for row in outcome.leaderboard.itertuples())
        raise SearchError(f"no trial produced a model (trials in {outcome.experiment_path}):\n{reasons or '  none ran'}")
    if outcome.interrupted:
        log.warning("the search was interrupted: the best finished trial is saved to %s; continue the search "
                    "with fit(..., output_dir=%r, resume=True)", r.output / "model", str(r.output))
    config = outcome.best_config
    detector = build(config.model, len(train.classes), pretrained=config.pretrained, image_size=config.image_size,
                     load_pretrained=False)
    detector.load_state_dict(outcome.best_state)
    board, metrics = outcome.leaderboard, outcome.best_metrics
    if r.time_limit is not None and not r.resume:
        # Ray has shut down by now: only the save is left to reserve time for.
        save_by = r.deadline_wall + _reserve(r.time_limit, True) - _reserve(r.time_limit, False)
        device = _continuation_device(outcome.gpus_per_trial)
        if device is not None:
            board, metrics = _continue_best(detector, config, train, val, board, outcome.history, metrics,
                                            save_by, r.time_limit, r.progress, device)
    return ObjectDetector(detector, train.classes, config, leaderboard=board, history=outcome.history,
                          metrics=metrics)


def _continuation_device(gpus_per_trial: float) -> torch.device | None:
    """Where the best trial continues: the kind of device it trained on, or None (with a note)
    when this process has none such (a CPU-only driver of a GPU cluster)."""
    if gpus_per_trial <= 0:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    log.info("not continuing the best trial with the time left: it trained on a GPU and this process has none")
    return None


def _continue_best(detector, config: TrainConfig, train: Dataset, val: Dataset, board, history: dict,
                   metrics: dict, deadline_wall: float, time_limit: float, progress: bool,
                   device: torch.device | None = None):
    """Spend time the search left over (trials stopped early by ASHA free it) on the best trial.

    Only a best trial that its time share cut short is continued, in this process on ``device``,
    from its best checkpoint at half its learning rate (a warm restart of the cosine schedule),
    and only when the time left holds an epoch and a validation as long as its last ones; its row
    and history are updated, and the detector keeps whichever epoch validates best.
    """
    trial_id = metrics["trial_id"]
    row = board.index[board["trial_id"] == trial_id][0]
    left = deadline_wall - time.time()
    last = (history.get(trial_id) or [{}])[-1]
    needed = 1.2 * (float(last.get("train_seconds") or 0.0) + float(last.get("val_seconds") or 0.0))
    if board.at[row, "status"] != "stopped (time limit)" or left < max(10.0, 0.02 * time_limit, needed):
        return board, metrics
    done = int(board.at[row, "epochs"])
    if done >= config.epochs:
        return board, metrics
    log.info("continuing trial %s for the %.0f s the search left over", trial_id, left)
    more = config.replace(lr=config.lr * 0.5, warmup_steps=min(config.warmup_steps, 10))
    outcome = run_trial(more, train, val, device=device, resume={"state_dict": detector.state_dict(), "epoch": done},
                        deadline=time.monotonic() + left, progress=progress)
    records = [history_record(r) for r in outcome.result.history]
    history[trial_id] = history.get(trial_id, []) + records
    board = board.copy()
    board.at[row, "epochs"] = records[-1]["epoch"] if records else done
    board.at[row, "seconds"] = round(float(board.at[row, "seconds"]) + outcome.seconds, 1)
    board.at[row, "status"] = _status(outcome.result) + " (continued)"
    new = outcome.result.best_metrics
    if new and (new["map"], new["map_50"]) > (metrics["map"], metrics["map_50"]):
        detector.load_state_dict(outcome.detector.state_dict())
        metrics = {"map": new["map"], "map_50": new["map_50"], "trial_id": trial_id}
        board.at[row, "val_map"], board.at[row, "val_map_50"] = new["map"], new["map_50"]
    return sort_leaderboard(board.to_dict("records")), metrics
