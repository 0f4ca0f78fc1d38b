"""Training: one epoch, and a run to a deadline that keeps time for its validations."""

from __future__ import annotations

import itertools
import random
import time
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..errors import InputError, TrainingError
from .distributed import Replicas, unwrap
from .evaluate import evaluate, validation_seconds_per_image
from .optim import ModelEma, WarmupCosine, build_optimizer
from .state import TrainResult, TrainState

__all__ = ["TrainResult", "TrainState", "ModelEma", "seed_everything", "build_optimizer", "train_one_epoch",
           "train"]

EpochCallback = Callable[[dict, TrainState], None]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    device: torch.device,
    *,
    scheduler: WarmupCosine | None = None,
    ema: ModelEma | None = None,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float = 0.0,
    deadline: float | None = None,
    progress: bool = False,
    desc: str = "train",
    replicas: Replicas | None = None,
) -> dict:
    """Train for one pass over ``loader``, stopping cleanly between steps before ``deadline``.

    A step is not started when the average step so far would not finish by the deadline. Data-
    parallel ``replicas`` (``model`` wrapped by :meth:`Replicas.wrap`) all follow rank 0's clock:
    its decision to stop and its learning rate, before every step.

    Returns:
        {"loss": mean total loss, "steps", "images", "seconds", "deadline_hit": bool}.

    Raises:
        TrainingError: the loss became NaN or infinite.
    """
    model.train()
    start = time.monotonic()
    total, steps, images_seen, deadline_hit = 0.0, 0, 0, False
    bar = tqdm(loader, desc=desc, leave=False, disable=None if progress else True, dynamic_ncols=True)
    for images, targets in bar:
        now = time.monotonic()
        stop = deadline is not None and now + (now - start) / max(1, steps) * (steps > 0) >= deadline
        if replicas is not None and replicas.parallel:
            stop, factor = replicas.follow(stop, 1.0 if scheduler is None else scheduler.factor(), device)
            if scheduler is not None:
                scheduler.follow(factor)
        if stop:
            deadline_hit = True
            break
        images = [img.to(device, non_blocking=True) for img in images]
        targets = [{k: t[k].to(device, non_blocking=True) for k in ("boxes", "labels")} for t in targets]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            raise TrainingError(f"loss diverged at step {steps + 1} of {desc} ({parts}); lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(unwrap(model))
        total += float(loss.detach())
        steps += 1
        images_seen += len(images)
        bar.set_postfix(loss=f"{total / steps:.3f}")
    bar.close()
    return {"loss": total / max(1, steps), "steps": steps, "images": images_seen,
            "seconds": time.monotonic() - start, "deadline_hit": deadline_hit}


def _rank(metrics: dict) -> tuple[float, float]:
    return (metrics.get("map", -1.0), metrics.get("map_50", -1.0))


class _ValidationClock:
    """How long a validation takes: seconds per image, measured on one batch before training
    starts and again by every validation, times the images to score."""

    def __init__(self, model: nn.Module, loader, device: torch.device) -> None:
        self.images = len(loader.dataset)
        self.per_image = validation_seconds_per_image(model, loader, device)

    def full(self) -> float:
        """Seconds a whole validation is expected to take (10 % margin)."""
        return 1.1 * self.per_image * self.images

    def update(self, metrics: dict) -> None:
        self.per_image = metrics["seconds"] / max(1, metrics["num_images"])


def train(
    model: nn.Module,
    train_loader,
    config: TrainConfig,
    device: torch.device,
    *,
    val_loader=None,
    class_names: list[str] | None = None,
    deadline: float | None = None,
    on_epoch: EpochCallback | None = None,
    state: TrainState | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` until ``deadline`` (``time.monotonic()``), or for ``config.epochs`` epochs.

    With a deadline and ``config.epochs=None`` the run is planned by time: the learning rate
    warms up, then decays along a cosine that reaches its floor when the training time ends
    (the deadline less the last validation); a number of epochs is then only a cap. Without a
    deadline the schedule is planned over ``config.epochs``. With ``config.patience``, a run whose
    val mAP has not improved for that many validations in the second half of its schedule stops
    (``result.stopped == "converged"``).

    Validation (COCO mAP, in fp32) runs every ``config.eval_every`` epochs and after the last.
    Its time is part of the budget: measured per image on one batch before training, it is kept
    back from the last epoch's training (at most a quarter of the budget), and a validation
    that cannot finish by the deadline scores a fixed, seeded random subset of the images instead
    (``val_images`` says how many), or is skipped when not even one image fits. With
    ``config.ema_decay`` > 0 the moving average of the weights is what is validated, passed on
    and kept. ``on_epoch(record, state)`` receives each epoch's record (``record["is_best"]``
    marks a new best epoch) and the :class:`TrainState` (``state.kept``, ``state.checkpoint()``),
    which the Ray trainable reports and checkpoints; the time it takes is kept back too.
    ``state`` continues a run (a resumed checkpoint, or an out-of-memory retry at a smaller batch).
    Data-parallel (the process group Ray Train sets up: :class:`~.distributed.Replicas`), every
    replica trains its shard of each batch and rank 0 validates, decides and shares each epoch's
    record; ``on_epoch`` is called on every replica with that same record.
    """
    epochs = config.epochs
    if epochs is None and deadline is None:
        raise InputError("epochs=None trains until a deadline: give a time limit or a number of epochs")
    state = state if state is not None else TrainState(model, config, device)
    result = state.result
    start = time.monotonic()
    validates = val_loader is not None and state.replicas.main
    clock = _ValidationClock(state.kept, val_loader, device) if validates else None
    final_validation = 0.0 if clock is None or deadline is None else min(clock.full(), 0.25 * (deadline - start))
    scheduler = state.schedule(None if epochs is None else len(train_loader) * max(1, epochs - state.epoch),
                               start, None if deadline is None else deadline - final_validation)
    report_seconds = 0.0  # what on_epoch (report, checkpoint) took last time
    stale = 0  # validations in the second half of the schedule without a new best
    for epoch in itertools.count(state.epoch + 1) if epochs is None else range(state.epoch + 1, epochs + 1):
        reserve = report_seconds + (0.0 if clock is None or deadline is None else
                                    min(clock.full(), 0.25 * (deadline - start)))
        epoch_deadline = None if deadline is None else deadline - reserve
        stats = train_one_epoch(state.parallel, state.optimizer, train_loader, device, scheduler=scheduler,
                                ema=state.ema, amp_dtype=state.amp_dtype, scaler=state.scaler,
                                grad_clip=config.grad_clip, deadline=epoch_deadline, progress=progress,
                                desc=f"epoch {epoch}" + ("" if epochs is None else f"/{epochs}"),
                                replicas=state.replicas)
        if stats["steps"] == 0 and state.epoch > 0:
            result.stopped = "time_limit"
            break
        state.epoch, state.steps, state.progress = epoch, state.steps + stats["steps"], scheduler.progress()
        record = {"epoch": epoch, "loss": stats["loss"], "steps": stats["steps"],
                  "batch_size": getattr(train_loader, "batch_size", config.batch_size),
                  "train_seconds": stats["seconds"], "lr": state.optimizer.param_groups[0]["lr"]}
        if state.replicas.main:  # the other replicas take the record, and its decisions, from rank 0
            # Out of time: the deadline cut this epoch, or after this epoch's validation (if it has
            # one) not even one more step would fit; then this epoch's validation is the last one.
            validating = clock is not None and (epoch == epochs or epoch % config.eval_every == 0)
            step_seconds = stats["seconds"] / max(1, stats["steps"])
            out_of_time = stats["deadline_hit"] or (epoch_deadline is not None and time.monotonic() + step_seconds
                                                    + (clock.full() if validating else 0.0) >= epoch_deadline)
            if clock is not None and (validating or out_of_time):
                _validate(state, val_loader, class_names or [], clock, record,
                          None if deadline is None else deadline - report_seconds)
                if "val_map" in record and state.progress >= 0.5:
                    stale = 0 if record["is_best"] else stale + 1
            record["time_limit_hit"] = out_of_time
            record["converged"] = config.patience is not None and stale >= config.patience and not out_of_time
        record = state.replicas.share(record)
        out_of_time, converged = record["time_limit_hit"], record["converged"]
        result.history.append(record)
        if on_epoch is not None:
            called = time.monotonic()
            on_epoch(record, state)
            report_seconds = 1.5 * (time.monotonic() - called)
        if out_of_time or converged:
            result.stopped = "converged" if converged else "time_limit"
            break
    if result.best_state is None:
        result.best_state = _cpu_state(state.kept)
    return result


def _validate(state: TrainState, loader, class_names: list[str], clock: _ValidationClock, record: dict,
              deadline: float | None) -> None:
    """Validate the kept weights into ``record`` (val_map, ...; is_best) unless not one image fits."""
    metrics = evaluate(state.kept, loader, class_names, state.device, deadline=deadline,
                       seconds_per_image=clock.per_image)
    if metrics is None:
        return
    clock.update(metrics)
    record.update({f"val_{k}": metrics[k] for k in ("map", "map_50", "map_75")})
    record["val_seconds"], record["val_images"] = metrics["seconds"], metrics["num_images"]
    record["val_images_total"] = metrics["num_images_total"]
    result = state.result
    record["is_best"] = not result.best_metrics or _rank(metrics) > _rank(result.best_metrics)
    if record["is_best"]:
        result.best_metrics = {**metrics, "epoch": record["epoch"]}
        result.best_state = _cpu_state(state.kept)


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
