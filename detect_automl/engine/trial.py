"""One trial: build the detector and loaders for a TrainConfig, train, keep the best epoch."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import torch

from ..budget import Budget
from ..config import TrainConfig
from ..data.dataset import Dataset
from ..data.loader import make_loader
from ..models import Detector, build
from .state import TrainState
from .train import TrainResult, seed_everything, train

__all__ = ["TrialOutcome", "default_device", "data_workers", "run_trial"]

log = logging.getLogger(__name__)

CACHE_BYTES = 2 * 2**30
"""At most this many bytes of decoded training images are kept in memory by a run that loads
them in its own process: a small dataset is decoded once, a large one partly."""


def _cache_bytes(cpus: float | None) -> int:
    """The run's cache: at most :data:`CACHE_BYTES` and its CPUs' share of a fifth of the memory
    free when it starts, so that trials of one CPU each on a many-core node stay well within it."""
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no cache
        return 0
    share = 1.0 if cpus is None else min(1.0, float(cpus) / (os.cpu_count() or 1))
    return int(min(CACHE_BYTES, 0.2 * free * share))


@dataclass
class TrialOutcome:
    """A trained detector (weights of its best epoch) and its training record."""

    detector: Detector
    result: TrainResult
    seconds: float


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def data_workers(device: torch.device, cpus: float | None = None) -> int:
    """DataLoader worker processes for a run with ``cpus`` CPUs (default: this process's).

    On CUDA, one CPU drives the GPU and up to 4 others decode and augment; on a CPU the model
    uses every core, so images load in the training process (0 workers).
    """
    if device.type != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if cpus is None and hasattr(os, "sched_getaffinity") else cpus
    return max(0, min(4, int(cpus or os.cpu_count() or 1) - 1))


def run_trial(
    config: TrainConfig,
    train_data: Dataset,
    val_data: Dataset | None,
    *,
    device: torch.device | None = None,
    cpus: float | None = None,
    budget: Budget | None = None,
    on_epoch=None,
    resume: dict | None = None,
    progress: bool = True,
) -> TrialOutcome:
    """Train ``config`` on ``train_data``, validating on ``val_data`` every ``eval_every`` epochs.

    This is what a single ``fit``, every Ray Tune trial and the continuation of the best trial
    call. ``resume`` continues a run: a :meth:`TrainState.checkpoint` dict continues it exactly
    (optimizer, schedule, weight average, best mAP, next epoch); a dict with only
    ``state_dict`` and ``epoch`` starts from those weights with a fresh optimizer and schedule,
    numbering epochs on. ``cpus`` sizes the data workers when ``config.num_workers`` is None.
    With a ``budget``, training is planned to end with it (:func:`~detect_automl.engine.train.train`).

    Out of GPU memory, the batch is halved (down to 1) and training goes on from the state it
    had reached, its best epoch kept; each epoch's record says the batch it used.

    In a Ray Train worker (data-parallel), each replica trains on its shard of every epoch with
    ``config.batch_size`` images a step (the batch is per replica), rank 0 validates, and an
    out-of-memory error ends the run.
    """
    start = time.monotonic()
    deadline = None if budget is None else budget.monotonic()
    device = device or default_device()
    seed_everything(config.seed)
    # A resumed run has its weights: build the architecture it was trained in, without reading any.
    detector = build(config.model, len(train_data.classes), pretrained=config.pretrained,
                     image_size=config.image_size, load_pretrained=resume is None)
    state = TrainState(detector, config, device)
    if resume is not None:
        state.restore(resume)
    workers = data_workers(device, cpus) if config.num_workers is None else config.num_workers
    replicas = state.replicas
    val_loader = None
    if val_data is not None and len(val_data) and replicas.main:  # rank 0 validates
        val_loader = make_loader(val_data, config.batch_size, train=False, num_workers=workers,
                                 pin_memory=device.type == "cuda")
    batch_size = config.batch_size
    while True:
        # Training images larger than twice what the model looks at are shrunk before augmentation.
        train_loader = make_loader(train_data, batch_size, train=True, augment=config.augment, num_workers=workers,
                                   seed=config.seed, max_side=2 * detector.input_side,
                                   pin_memory=device.type == "cuda", cache_bytes=0 if workers else _cache_bytes(cpus),
                                   shard=(replicas.rank, replicas.size) if replicas.parallel else None)
        try:
            result = train(detector, train_loader, config, device, val_loader=val_loader,
                           class_names=list(train_data.classes), deadline=deadline, on_epoch=on_epoch,
                           state=state, progress=progress)
            break
        except torch.cuda.OutOfMemoryError:
            if batch_size <= 1 or replicas.parallel:  # replicas would have to agree on the retry
                raise
            state.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            log.warning("out of GPU memory at batch %d: going on from epoch %d with batch %d", batch_size,
                        state.epoch + 1, batch_size // 2)
            batch_size //= 2
    detector.load_state_dict(result.best_state)
    # Hand on the layout every freshly built detector has (a CPU run trains channels-last), so the
    # detector predicts exactly what it will once saved and loaded.
    detector.to(memory_format=torch.contiguous_format)
    return TrialOutcome(detector, result, time.monotonic() - start)
