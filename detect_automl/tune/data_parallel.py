"""Data-parallel trials: a Tune trial drives a Ray Train ``TorchTrainer`` of several workers.

Ray Train starts the workers and their process group (gloo on CPUs, NCCL on GPUs; on any nodes
of the cluster) and runs :func:`~detect_automl.engine.trial.run_trial` in each, data-parallel
(:mod:`detect_automl.engine.distributed`). Rank 0 reports each validated epoch with a checkpoint;
the trial relays those reports to Tune as its own, so ASHA, the leaderboard, the best checkpoint
and resume work as for a one-worker trial. The trial itself (Ray Train's "driver") only waits:
it holds a little memory and no CPU, and the workers ask for the trial's CPUs and GPUs.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import ray
import ray.train
import ray.train.torch
from ray.train.torch import TorchTrainer
from ray.train.v2.api.callback import UserCallback
from ray.tune import get_context
from ray.util.queue import Empty, Queue

from ..budget import Budget
from ..config import TrainConfig
from ..engine.state import TrainState
from ..engine.trial import run_trial
from .trainable import SharedData, report_epoch

__all__ = ["DRIVER_MEMORY", "driver_resources", "run_workers"]

DRIVER_MEMORY = 512 * 2**20
"""Bytes of memory a data-parallel trial asks Ray for: the trial process holds the datasets and
waits for its workers, which ask for the trial's CPUs and GPUs."""


def driver_resources() -> dict:
    """What a data-parallel trial asks of Tune: memory only (its workers hold the compute)."""
    return {"memory": DRIVER_MEMORY}


def run_workers(config: TrainConfig, data: SharedData, *, workers: int, cpus: float,
                gpus: float, budget: Budget | None, resume: dict | None, storage: Path,
                report: Callable[[dict, object], None]) -> None:
    """Train ``config`` on ``data`` (the train and val Datasets) with ``workers`` data-parallel
    Ray Train workers sharing ``cpus`` and ``gpus``; ``report(metrics, checkpoint)`` receives
    rank 0's reports as they come.

    Raises the first failing worker's own exception (a diverged loss stays a TrainingError).
    """
    reports = Queue(1, actor_options={"num_cpus": 0})
    per_worker = {"CPU": cpus / workers, **({"GPU": gpus / workers} if gpus > 0 else {})}
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"config": config.to_dict(), "data": data, "budget": budget,
                           "resume": None if resume is None else ray.put(resume), "cpus": cpus / workers},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            # A fresh name each start: a resumed trial continues from Tune's checkpoint, never Train's.
            name=f"{get_context().get_trial_id()}-{time.time_ns()}", storage_path=str(storage),
            callbacks=[_Relay(reports)], failure_config=ray.train.FailureConfig(max_failures=0)),
    )
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the trial's thread below
            failure.append(exc)

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive() or not reports.empty():
        try:
            metrics, checkpoint = reports.get(timeout=0.5)
        except Empty:
            continue
        report(metrics, checkpoint)
        if checkpoint is not None:  # Tune has its own copy now
            checkpoint.filesystem.delete_dir(checkpoint.path)
    thread.join()
    if failure:
        raise _worker_error(failure[0])


def _worker_error(exc: BaseException) -> BaseException:
    """What explains a data-parallel trial's failure, when Ray Train says which workers failed: a
    worker Ray lost (its node died, its process was killed) first, since the survivors' errors
    (gloo's "Connection closed by peer") only follow from it; else the lowest failing rank's own
    exception (a diverged loss stays ``diverged``). ``exc`` itself otherwise."""
    failures = getattr(exc, "worker_failures", None)
    if not failures:
        return exc
    errors = [getattr(failures[rank], "cause", None) or failures[rank] for rank in sorted(failures)]
    lost = [e.health_check_failure for e in errors if getattr(e, "health_check_failure", None) is not None]
    return lost[0] if lost else errors[0]


class _Relay(UserCallback):
    """Runs in Ray Train's controller: hands rank 0's metrics (their ``node_id`` naming every
    worker's node, rank 0's first) and the persisted checkpoint to the trial (a queue of one, so
    the workers wait while the trial reports to Tune)."""

    def __init__(self, queue) -> None:
        self.queue = queue

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        nodes = dict.fromkeys(m["node_id"] for m in metrics)
        self.queue.put(({**metrics[0], "node_id": ",".join(nodes)}, checkpoint))  # rank 0's node first


def _worker(loop: dict) -> None:
    """One Ray Train worker: a replica of the trial's run (see :func:`run_trial`)."""
    config = TrainConfig.from_dict(loop["config"])
    train_data, val_data = loop["data"].get()
    resume = None if loop["resume"] is None else ray.get(loop["resume"])
    device = ray.train.torch.get_device()
    node = ray.get_runtime_context().get_node_id()

    def report(record: dict, state: TrainState) -> None:
        report_epoch(record, state, node, device,
                     lambda metrics, checkpoint: ray.train.report(metrics, checkpoint=checkpoint))

    run_trial(config, train_data, val_data, device=device, cpus=loop["cpus"], budget=loop["budget"],
              on_epoch=report, resume=resume, progress=False)
