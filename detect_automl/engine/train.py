"""Training: one epoch, and a time-bounded run with warm-up, cosine schedule, clipping and AMP."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..errors import TrainingError
from .evaluate import evaluate

__all__ = ["TrainResult", "ModelEma", "seed_everything", "build_optimizer", "train_one_epoch", "train"]

EpochCallback = Callable[[dict, nn.Module], None]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float):
    """SGD (Nesterov-free, as torchvision's references) or AdamW over trainable parameters.

    Norm layers and biases get no weight decay.
    """
    decay, no_decay = [], []
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or param_name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return torch.optim.AdamW(groups, lr=lr)


class _WarmupCosine:
    """LR factor: linear warm-up, then cosine to ``min_ratio``.

    Progress is the larger of steps done / planned steps and time used / time budget, so a run
    cut short by its deadline still ends its schedule at a low learning rate.
    """

    def __init__(self, optimizer, total_steps: int, warmup_steps: int, min_ratio: float,
                 start: float, deadline: float | None) -> None:
        self.total_steps = max(1, total_steps)
        self.warmup_steps = min(warmup_steps, self.total_steps // 4)
        self.min_ratio = min_ratio
        self.start, self.deadline = start, deadline
        self.step_count = 0
        self.optimizer = optimizer
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self._apply()

    def factor(self) -> float:
        if self.step_count < self.warmup_steps:
            return 0.001 + (1 - 0.001) * self.step_count / self.warmup_steps
        progress = (self.step_count - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        if self.deadline is not None:
            progress = max(progress, (time.monotonic() - self.start) / max(1e-9, self.deadline - self.start))
        progress = min(1.0, progress)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        f = self.factor()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()


class ModelEma:
    """Exponential moving average of a model's weights and buffers (torch's ``AveragedModel``).

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a short run
    averages roughly its last tenth of steps and a long one the last ``1 / (1 - decay)`` steps.
    The average is what gets validated, checkpointed and kept: from scratch its validation mAP
    swings less from epoch to epoch than the raw weights', which ranks trials on less noise.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.averaged = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=self._lerp, use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The averaged copy of the model."""
        return self.averaged.module

    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (after an optimizer step)."""
        self.updates += 1
        self.averaged.update_parameters(model)

    def _lerp(self, averaged: list[torch.Tensor], current: list[torch.Tensor], _count) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        else:  # integer buffers (BatchNorm's num_batches_tracked) follow the model
            torch._foreach_copy_(averaged, current)


def _amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    device: torch.device,
    *,
    scheduler: _WarmupCosine | None = None,
    ema: ModelEma | None = None,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float = 0.0,
    deadline: float | None = None,
    progress: bool = False,
    desc: str = "train",
) -> dict:
    """Train for one pass over ``loader``, stopping cleanly between steps before ``deadline``.

    A step is not started when the average step so far would not finish by the deadline.

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
        if deadline is not None and now + (now - start) / max(1, steps) * (steps > 0) >= deadline:
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
            ema.update(model)
        total += float(loss.detach())
        steps += 1
        images_seen += len(images)
        bar.set_postfix(loss=f"{total / steps:.3f}")
    bar.close()
    return {"loss": total / max(1, steps), "steps": steps, "images": images_seen,
            "seconds": time.monotonic() - start, "deadline_hit": deadline_hit}


@dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        history: one dict per epoch (epoch, loss, steps, train_seconds, and val metrics if any).
        best_state: state_dict (CPU tensors) of the best epoch by val mAP (ties: mAP@50), or the last.
        best_metrics: the validation metrics of that epoch ({} without validation).
        stopped: "epochs" (all done) or "time_limit".
    """

    history: list[dict] = field(default_factory=list)
    best_state: dict | None = None
    best_metrics: dict = field(default_factory=dict)
    stopped: str = "epochs"


def _rank(metrics: dict) -> tuple[float, float]:
    return (metrics.get("map", -1.0), metrics.get("map_50", -1.0))


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
    start_epoch: int = 1,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` for ``config.epochs`` epochs or until ``deadline`` (``time.monotonic()``).

    Validation (COCO mAP) runs every ``config.eval_every`` epochs and after the last; time for
    it is kept back from training so the run ends by the deadline. With ``config.ema_decay`` > 0
    the moving average of the weights (:class:`ModelEma`) is what is validated, passed on and
    kept. ``on_epoch(record, model)`` receives each epoch's record (``record["is_best"]`` marks a
    new best epoch) and that model, which the Ray trainable reports and checkpoints.
    ``start_epoch`` > 1 continues a run.
    """
    model.to(device)
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay, config.momentum)
    start = time.monotonic()
    steps_per_epoch = max(1, len(train_loader))
    scheduler = _WarmupCosine(optimizer, config.epochs * steps_per_epoch, config.warmup_steps,
                              config.min_lr_ratio, start, deadline)
    amp_dtype = _amp_dtype(device, config.amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ema = ModelEma(model, config.ema_decay) if config.ema_decay > 0 else None
    kept = model if ema is None else ema.module  # validated, checkpointed and returned
    result = TrainResult()
    # Time kept back for validation: measured after the first one, a tenth of the budget before.
    eval_reserve = 0.1 * (deadline - start) if deadline is not None and val_loader is not None else 0.0
    for epoch in range(start_epoch, config.epochs + 1):
        epoch_deadline = None if deadline is None else deadline - eval_reserve
        stats = train_one_epoch(model, optimizer, train_loader, device, scheduler=scheduler, ema=ema,
                                amp_dtype=amp_dtype, scaler=scaler, grad_clip=config.grad_clip,
                                deadline=epoch_deadline, progress=progress,
                                desc=f"epoch {epoch}/{config.epochs}")
        if stats["steps"] == 0 and epoch > 1:
            result.stopped = "time_limit"
            break
        record = {"epoch": epoch, "loss": stats["loss"], "steps": stats["steps"], "batch_size": config.batch_size,
                  "train_seconds": stats["seconds"], "lr": optimizer.param_groups[0]["lr"]}
        # Out of time: the deadline cut this epoch, or not even one more step would fit.
        step_seconds = stats["seconds"] / max(1, stats["steps"])
        out_of_time = stats["deadline_hit"] or (
            epoch_deadline is not None and time.monotonic() + step_seconds >= epoch_deadline)
        last = epoch == config.epochs or out_of_time
        if val_loader is not None and (last or epoch % config.eval_every == 0):
            metrics = evaluate(kept, val_loader, class_names or [], device, amp_dtype=amp_dtype)
            eval_reserve = 1.2 * metrics["seconds"]
            record.update({f"val_{k}": metrics[k] for k in ("map", "map_50", "map_75")})
            record["is_best"] = result.best_state is None or _rank(metrics) > _rank(result.best_metrics)
            if record["is_best"]:
                result.best_metrics = metrics
                result.best_state = _cpu_state(kept)
        record["time_limit_hit"] = out_of_time
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record, kept)
        if out_of_time:
            result.stopped = "time_limit"
            break
    if result.best_state is None:
        result.best_state = _cpu_state(kept)
    return result


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
