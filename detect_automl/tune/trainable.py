"""The Ray Tune function trainable: build, train, report val mAP per epoch, checkpoint the best."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from ..config import TrainConfig
from ..data.dataset import Dataset
from ..engine.trial import run_trial
from ..leaderboard import history_record

__all__ = ["train_trial", "run_with_oom_retry", "CHECKPOINT_FILE"]

log = logging.getLogger("detect_automl")

CHECKPOINT_FILE = "detector.pt"


def train_trial(
    params: dict,
    *,
    train_data: Dataset,
    val_data: Dataset,
    base: dict,
    deadline_wall: float | None,
    trial_seconds: float | None = None,
) -> None:
    """Train one sampled configuration inside a Ray Tune trial.

    Args:
        params: the values Tune sampled for this trial (TrainConfig fields).
        train_data, val_data: shipped once through Ray's object store (``tune.with_parameters``).
        base: the fixed TrainConfig fields (preset merged with the user's hyperparameters).
        deadline_wall: ``time.time()`` by which the trial must have stopped (wall clock, so it
            holds on every node of a cluster).
        trial_seconds: the trial's own time budget from its start (the search's share for
            one trial), or None for "until ``deadline_wall``".

    Each epoch reports ``val_map``, ``val_map_50``, ``loss``, ``epoch``, ``time_limit_hit`` and
    the Ray ``node_id`` it ran on;
    an epoch that beats the trial's best so far also reports a checkpoint holding the
    detector's state_dict and that epoch number. A resumed trial continues from it.
    """
    import ray
    from ray import tune

    if deadline_wall is not None and time.time() >= deadline_wall - 1.0:
        return  # started after the deadline: nothing to report (shown as "not run")
    config = TrainConfig.from_dict({**base, **params})
    init_state, start_epoch = None, 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            saved = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        init_state, start_epoch = saved["state_dict"], int(saved["epoch"]) + 1
        config = config.replace(pretrained=None)  # the checkpoint already holds the weights
    ends = [t for t in (deadline_wall, None if trial_seconds is None else time.time() + trial_seconds) if t]
    deadline = time.monotonic() + (min(ends) - time.time()) if ends else None

    node = ray.get_runtime_context().get_node_id()

    def report(record: dict, model: torch.nn.Module) -> None:
        metrics = {**history_record(record), "time_limit_hit": record["time_limit_hit"], "node_id": node,
                   "batch_size_used": record["batch_size"]}
        if not record.get("is_best"):
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            torch.save({"state_dict": model.state_dict(), "epoch": record["epoch"]},
                       Path(directory) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    def attempt(cfg: TrainConfig) -> None:
        run_trial(cfg, train_data, val_data, deadline=deadline, on_epoch=report, init_state=init_state,
                  start_epoch=start_epoch, progress=False)

    run_with_oom_retry(attempt, config)


def run_with_oom_retry(attempt: Callable[[TrainConfig], None], config: TrainConfig) -> None:
    """Run ``attempt(config)``; on CUDA out-of-memory halve the batch and try again (down to 1).

    The reported ``batch_size_used`` shows the batch a trial ended with; out of memory at batch 1
    fails the trial like any other error.
    """
    while True:
        try:
            return attempt(config)
        except torch.cuda.OutOfMemoryError:
            if config.batch_size <= 1:
                raise
            torch.cuda.empty_cache()
            log.warning("out of GPU memory at batch %d: retrying with batch %d", config.batch_size,
                        config.batch_size // 2)
            config = config.replace(batch_size=config.batch_size // 2)
