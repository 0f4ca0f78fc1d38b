"""The Ray Tune function trainable: build, train, report each validated epoch with a checkpoint."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .._saving import write_serialized
from ..budget import Budget
from ..config import TrainConfig
from ..engine.state import TrainState
from ..engine.trial import run_trial
from ..leaderboard import history_record
from .space import is_default

__all__ = ["SharedData", "train_trial", "trial_device", "report_epoch", "CHECKPOINT_FILE", "REPORT_MARGIN"]

CHECKPOINT_FILE = "detector.pt"
REPORT_MARGIN = 1.0
"""Seconds a trial keeps before the search's deadline for its last report and checkpoint, so
Tune's own time budget never stops it mid-validation."""


def trial_device() -> torch.device:
    """The device Ray gave this trial: its GPU, or the CPU when it was given none.

    Ray leaves ``CUDA_VISIBLE_DEVICES`` alone for a trial without GPUs, so such a trial must
    not pick CUDA just because it is visible: it would land on a GPU another trial holds.
    """
    import ray

    return torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")


CHECKPOINT_SCORE = "checkpoint_score"
"""The metric Tune keeps checkpoints by: ``val_map`` on the epochs the engine calls a new best
(mAP, ties by mAP@50: ``record["is_best"]``), ``val_map - 1`` on the others. mAP lies in [0, 1],
so every best epoch outranks every other, and a later best that ties on mAP (it won on mAP@50)
outranks the earlier one, since Tune keeps the later of equal scores. Ranking by ``val_map``
alone dropped such a best epoch's checkpoint and restored another epoch's weights."""


def checkpoint_score(record: dict) -> float:
    """A validated epoch's :data:`CHECKPOINT_SCORE`."""
    return float(record["val_map"]) - (0.0 if record["is_best"] else 1.0)


@dataclass(frozen=True)
class SharedData:
    """The (train, val) Datasets, put once in Ray's object store: each node fetches one copy,
    which its trials and their data-parallel workers share. (A bare ObjectRef given to
    ``tune.with_parameters`` would arrive resolved, and a trial could only hand its workers a
    fresh copy.)"""

    ref: object

    def get(self) -> tuple:
        import ray

        return ray.get(self.ref)


def report_epoch(record: dict, state: TrainState, node: str, device: torch.device,
                 send: Callable[[dict, object], None]) -> None:
    """Report a validated epoch: ``send(metrics, checkpoint)`` with ``tune.report`` in a trial or
    ``ray.train.report`` in a data-parallel worker. Rank 0 (a one-process run is its own rank 0)
    sends the checkpoint of the whole training state; the other ranks send the metrics alone.
    An epoch without validation sends nothing (Tune ranks on ``val_map`` and rejects a result
    without it); the record is the same on every rank, so all ranks report, or none."""
    if "val_map" not in record:
        return
    metrics = {**history_record(record), "time_limit_hit": record["time_limit_hit"],
               "converged": record.get("converged", False), "node_id": node, "device": device.type,
               "batch_size_used": record["batch_size"], "lr": record["lr"], CHECKPOINT_SCORE: checkpoint_score(record)}
    if not state.replicas.main:
        send(metrics, None)
        return
    from ray.tune import Checkpoint

    with tempfile.TemporaryDirectory() as directory:
        saved = state.checkpoint()
        write_serialized(Path(directory) / CHECKPOINT_FILE, lambda file: torch.save(saved, file))
        send(metrics, Checkpoint.from_directory(directory))


def train_trial(
    params: dict,
    *,
    data: SharedData,
    base: dict,
    budget: Budget | None,
    trial_seconds: float | None = None,
    default: dict | None = None,
    default_seconds: float | None = None,
    workers: int = 1,
    resources: tuple[float, float] = (1.0, 0.0),
    storage: Path | None = None,
) -> None:
    """Train one configuration inside a Ray Tune trial.

    Args:
        params: the values Tune chose for this trial (TrainConfig fields).
        data: the train and val Datasets (:class:`SharedData`).
        base: the fixed TrainConfig fields (preset merged with the user's hyperparameters).
        budget: the search's budget (a wall-clock deadline, the same on every node of a cluster).
        trial_seconds: the plan's time for one trial from its start, or None for "until
            ``budget`` ends".
        default: the preset's default point (the searched keys' values), which trains for
            ``default_seconds`` instead (None: until ``budget`` ends).
        workers: data-parallel Ray Train workers (:mod:`.data_parallel`) sharing the trial's
            ``resources`` (CPUs, GPUs), their runs under ``storage``; 1 trains in this process.

    The trial's schedule is planned to its own deadline. Each validated epoch reports
    ``val_map``, ``val_map_50``, ``loss``, ``lr``, ``epoch``, ``time_limit_hit``, ``converged``, the batch
    used, the Ray ``node_id`` and the ``device`` type, with a checkpoint of the whole training
    state (:meth:`TrainState.checkpoint`), and a ``checkpoint_score`` by which Tune keeps the
    engine's best epoch (see :data:`CHECKPOINT_SCORE`) and the latest; a resumed trial continues
    from the latest with its next epoch. Epochs without
    validation (``eval_every`` > 1, or no time left to validate) report nothing: Tune ranks on
    ``val_map`` and rejects a result without it.
    """
    import ray
    from ray import tune

    if budget is not None and budget.expired(REPORT_MARGIN):
        return  # started after the deadline: nothing to report (shown as "not run")
    config = TrainConfig.from_dict({**base, **params})
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    seconds = default_seconds if is_default(params, default) else trial_seconds
    own = None if budget is None else budget.share(seconds).minus(REPORT_MARGIN)

    if workers > 1:
        from .data_parallel import run_workers

        run_workers(config, data, workers=workers, cpus=resources[0], gpus=resources[1],
                    budget=own, resume=resume, storage=storage,
                    report=lambda metrics, checkpoint: tune.report(metrics, checkpoint=checkpoint))
        return
    train_data, val_data = data.get()
    context = ray.get_runtime_context()
    node, device = context.get_node_id(), trial_device()

    def report(record: dict, state: TrainState) -> None:
        report_epoch(record, state, node, device,
                     lambda metrics, checkpoint: tune.report(metrics, checkpoint=checkpoint))

    run_trial(config, train_data, val_data, device=device, cpus=context.get_assigned_resources().get("CPU"),
              budget=own, on_epoch=report, resume=resume, progress=False)
