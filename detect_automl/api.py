"""fit(): the one call that turns a dataset into a tuned, saved ObjectDetector."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .data.dataset import Dataset
from .engine.trial import run_trial
from .errors import DatasetError, InputError
from .predictor import ObjectDetector
from .tune.space import preset_config

__all__ = ["fit"]

_SAVE_RESERVE_S = 3.0  # kept back from time_limit for restoring and saving the best model


def fit(
    train: Dataset,
    val: Dataset | None = None,
    *,
    time_limit: float | None = None,
    num_trials: int = 1,
    presets: str = "medium_quality",
    hyperparameters: Mapping[str, Any] | None = None,
    output_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> ObjectDetector:
    """Train a detector on ``train`` and save it under ``output_dir``/model.

    Args:
        train: the training data.
        val: validation data (ranks epochs and trials); without it a deterministic
            ``val_fraction`` of ``train`` is held out (seeded by ``seed``).
        time_limit: seconds for the whole call, saving included; None trains all epochs.
        num_trials: configurations to try.
        presets: a named preset ("fast", "medium_quality", "best_quality") giving defaults.
        hyperparameters: fixed values overriding the preset (any TrainConfig field).
        output_dir: where the saved model (``model/``) goes; default ``runs/detect_automl-<time>``.
        val_fraction: share of ``train`` held out when ``val`` is None.
        seed: seeds the split, initialisation, data order and augmentation.
        progress: show progress bars and a line per epoch.

    Returns:
        The trained ObjectDetector (best epoch by validation mAP), already saved.

    >>> detector = fit(Dataset("datasets/raccoon", split="train"), time_limit=300)  # doctest: +SKIP
    """
    start = time.monotonic()
    deadline = None if time_limit is None else start + float(time_limit) - _SAVE_RESERVE_S
    if time_limit is not None and float(time_limit) <= _SAVE_RESERVE_S:
        raise InputError(f"time_limit must be more than {_SAVE_RESERVE_S:g} s, got {time_limit}")
    if int(num_trials) < 1:
        raise InputError(f"num_trials must be >= 1, got {num_trials}")
    if len(train) == 0:
        raise DatasetError("the training dataset has no images")
    if val is None:
        train, val = train.split(val_fraction, seed=seed)
    config = preset_config(presets, gpu=torch.cuda.is_available())
    config = config.replace(seed=seed, **dict(hyperparameters or {}))
    output = Path(output_dir) if output_dir is not None else Path("runs") / f"detect_automl-{datetime.now():%Y%m%d-%H%M%S}"

    def report(record: dict) -> None:
        if progress:
            val_part = f", val mAP {record['val_map']:.3f} (mAP@50 {record['val_map_50']:.3f})" if "val_map" in record else ""
            tqdm.write(f"epoch {record['epoch']}: loss {record['loss']:.3f}{val_part}")

    outcome = run_trial(config, train, val, deadline=deadline, on_epoch=report, progress=progress)
    metrics = outcome.result.best_metrics
    row = {"trial_id": "0", "model": config.model, "val_map": metrics.get("map"),
           "val_map_50": metrics.get("map_50"), "epochs": len(outcome.result.history),
           "seconds": round(outcome.seconds, 1), "status": "completed", **_hyperparameter_columns(config)}
    detector = ObjectDetector(outcome.detector, train.classes, config, leaderboard=pd.DataFrame([row]),
                              history={"0": outcome.result.history}, metrics=metrics)
    detector.path = detector.save(output / "model")
    if progress:
        tqdm.write(f"saved the best model ({config.model}, val mAP {metrics.get('map', float('nan')):.3f}) "
                   f"to {detector.path} in {time.monotonic() - start:.0f} s")
    return detector


def _hyperparameter_columns(config: TrainConfig) -> dict:
    values = config.to_dict()
    values.pop("model")
    return values
