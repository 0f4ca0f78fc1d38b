"""Data-parallel training: the process group a run trains in, as Ray Train sets it up.

A run in a Ray Train worker (``TorchTrainer``: gloo on CPUs, NCCL on GPUs) finds the process
group torch.distributed already holds; a run anywhere else is a group of one and none of this
costs anything. Rank 0 decides everything that depends on a clock or on validation (when to
stop, the learning rate planned by time, the epoch's record) and the other ranks follow, so the
replicas take the same steps at the same rates and their weights stay identical.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Replicas", "unwrap"]


class Replicas:
    """The data-parallel group of this process: ``size`` replicas, this one ``rank``."""

    def __init__(self, rank: int = 0, size: int = 1) -> None:
        self.rank, self.size = int(rank), int(size)

    @classmethod
    def current(cls) -> "Replicas":
        """The group torch.distributed holds in this process (Ray Train's), or a group of one."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: validates, reports the metrics and writes the checkpoints."""
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in DistributedDataParallel (gradients averaged over the replicas; rank 0's
        buffers, such as BatchNorm statistics, broadcast at each forward), or itself alone."""
        if not self.parallel:
            return model
        ids = None
        if device.type == "cuda":
            ids = [device.index if device.index is not None else torch.cuda.current_device()]
        return DistributedDataParallel(model, device_ids=ids)

    def follow(self, stop: bool, lr_factor: float, device: torch.device) -> tuple[bool, float]:
        """Rank 0's decision to stop before this step, and its learning-rate factor, on every rank."""
        if not self.parallel:
            return stop, lr_factor
        decision = torch.tensor([float(stop), float(lr_factor)], dtype=torch.float64, device=self._device(device))
        dist.broadcast(decision, src=0)
        return bool(decision[0].item()), float(decision[1].item())

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.parallel:
            return value
        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @staticmethod
    def _device(device: torch.device) -> torch.device:
        # NCCL only moves CUDA tensors, gloo only CPU ones.
        return device if dist.get_backend() == "nccl" else torch.device("cpu")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model
