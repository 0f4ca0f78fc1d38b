"""The search plan: computed before any trial starts, from the time budget and the hardware.

It decides how many of the asked trials the budget carries at a useful fidelity, how many run
at once and with what resources, and how long each one trains. The preset's default keeps a
slot for the whole search; the portfolio's configurations, then sampled ones, share the other
slots. A trial that could not train for at least :data:`FIDELITY_FLOOR_STEPS` optimizer steps
is not run: its rank would be noise (benchmarks/RESULTS.md, "Rung rank correlation and the
fidelity floor"). On CPUs no trial runs beside the default when that would cost the default
more than a tenth of its speed alone (:data:`DEFAULT_SPEED_KEPT`; "fit on a faster CPU").
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..budget import SEARCH_OVERHEAD_S, Budget
from ..config import TrainConfig
from ..data.dataset import Dataset
from ..errors import InputError, SearchError

__all__ = ["FIDELITY_FLOOR_STEPS", "Hardware", "Probe", "SearchPlan", "SearchRequest", "make_plan",
           "max_concurrent_trials", "plan_search", "probe", "trial_resources", "trial_workers", "DEFAULT_SPEED_KEPT"]

log = logging.getLogger(__name__)

FIDELITY_FLOOR_STEPS = 1500
"""Optimizer steps a trial needs before its validation mAP ranks it (benchmarks/RESULTS.md,
"Rung rank correlation and the fidelity floor": rank correlation of rung-k val mAP with the
final one, per k)."""

DEFAULT_SPEED_KEPT = 0.9
"""On CPUs the trials share the cores the default would have alone: other trials run beside it
only when its slot keeps at least this share of its speed alone (measured by the probe). On 2
cores one thread of two ran SSDlite 0.48-0.74 times as fast (benchmarks/RESULTS.md, "Machines"),
so there the default trains alone, as a single run would (seed-era AutoGluon ran one trial on CPU)."""


@dataclass(frozen=True)
class Hardware:
    """What the trials can use: CPUs, GPUs (per node, for packing fractions) and GPU memory."""

    cpus: float
    gpus: float
    gpus_per_node: tuple[float, ...] = ()
    gpu_memory: int | None = None

    @classmethod
    def local(cls) -> Hardware:
        """This machine, as a local Ray would see it."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        memory = torch.cuda.get_device_properties(0).total_memory if gpus else None
        return cls(float(cpus), float(gpus), (float(gpus),), memory)

    @classmethod
    def of_cluster(cls, address: str) -> Hardware:
        """The Ray cluster at ``address`` (connects and disconnects: a few seconds)."""
        import ray

        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        try:
            return cls.of_ray()
        finally:
            ray.shutdown()

    @classmethod
    def of_ray(cls) -> Hardware:
        """The Ray cluster this process is connected to (``ray.init`` done)."""
        import ray

        total = ray.cluster_resources()
        per_node = tuple(float(n["Resources"].get("GPU", 0.0)) for n in ray.nodes() if n.get("Alive"))
        memory = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
        return cls(float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0)), per_node, memory)


def max_concurrent_trials(num_cpus: float, num_gpus: float, cpus_per_trial: float, gpus_per_trial: float,
                          gpus_per_node: list[float] | None = None) -> int:
    """How many trials fit at once. Fractional GPUs pack per GPU, never across GPUs.

    >>> max_concurrent_trials(64, 8, 1, 0.15)   # 6 per GPU x 8 GPUs
    48
    """
    by_cpu = math.floor(num_cpus / cpus_per_trial + 1e-9) if cpus_per_trial > 0 else 10**6
    if gpus_per_trial <= 0:
        return max(0, by_cpu)
    gpus = gpus_per_node or [num_gpus]
    if gpus_per_trial < 1:
        per_gpu = math.floor(1 / gpus_per_trial + 1e-9)
        by_gpu = sum(per_gpu * math.floor(g + 1e-9) for g in gpus)
    else:
        by_gpu = sum(math.floor(g / gpus_per_trial + 1e-9) for g in gpus)
    return max(0, min(by_cpu, by_gpu))


def trial_workers(workers_per_trial: int | None, gpus_per_trial: float | None,
                  cpus_per_trial: float | None) -> tuple[int, float | None, float | None]:
    """Data-parallel workers per trial, and the trial's (GPUs, CPUs) totals they split evenly.

    By default a trial given a whole number of GPUs above one trains one worker per GPU, and
    anything else one worker. More than one worker defaults to one GPU each on a machine with
    GPUs (one CPU each without), and needs a whole number of GPUs per worker: NCCL runs one
    rank per GPU.
    """
    gpus = gpus_per_trial
    if workers_per_trial is None:
        whole = gpus is not None and gpus >= 2 and float(gpus).is_integer()
        return (int(gpus) if whole else 1), gpus_per_trial, cpus_per_trial
    if isinstance(workers_per_trial, bool) or not float(workers_per_trial).is_integer() or workers_per_trial < 1:
        raise InputError(f"workers_per_trial must be a whole number >= 1, got {workers_per_trial!r}")
    workers = int(workers_per_trial)
    if workers == 1:
        return 1, gpus_per_trial, cpus_per_trial
    if gpus is None:
        gpus = float(workers) if torch.cuda.is_available() else 0.0
    if gpus > 0 and not (gpus / workers).is_integer():
        raise InputError(f"workers_per_trial={workers} with gpus_per_trial={gpus:g}: each worker needs a whole GPU "
                         f"(NCCL runs one rank per GPU); give gpus_per_trial={workers} or a multiple of it")
    return workers, gpus, float(workers) if cpus_per_trial is None and gpus == 0 else cpus_per_trial


def _even_share(cpus: float, parts: int) -> float:
    """Whole CPUs per part when ``cpus`` split evenly over ``parts``, at least 1."""
    return float(max(1, math.floor(cpus / max(1, parts))))


def trial_resources(hardware: Hardware, gpus_per_trial: float | None, cpus_per_trial: float | None,
                    gpu_share: float = 1.0, trials: int = 1) -> tuple[float, float, int]:
    """(CPUs, GPUs) per trial and how many trials run at once, checked against ``hardware``.

    ``gpus_per_trial=None`` on a machine with GPUs takes ``gpu_share`` (the plan's fraction from
    the probe's memory); CPUs default to an even split per GPU slot. Without GPUs, one machine's
    CPUs split evenly over the ``trials`` asked (8 cores, 2 trials: 4 each, none idle); on a
    cluster of several nodes (whose sizes may differ) each trial takes 1.
    """
    gpus = (gpu_share if hardware.gpus >= 1 else 0.0) if gpus_per_trial is None else float(gpus_per_trial)
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise InputError(f"gpus_per_trial must be 0, a fraction below 1 or a whole number, got {gpus_per_trial}")
    if gpus > 0 and hardware.gpus < min(gpus, 1.0):
        raise SearchError(f"gpus_per_trial={gpus} but the Ray cluster has {hardware.gpus:g} GPUs: the trials would "
                          "wait forever; pass gpus_per_trial=0 to train on CPUs")
    per_node = list(hardware.gpus_per_node) or None
    if cpus_per_trial is not None:
        cpus = float(cpus_per_trial)
    elif gpus > 0:  # an even split per GPU slot
        cpus = _even_share(hardware.cpus, max_concurrent_trials(10**6, hardware.gpus, 0, gpus, per_node))
    elif len(hardware.gpus_per_node) <= 1:  # one machine: an even split over the trials
        cpus = _even_share(hardware.cpus, trials)
    else:
        cpus = 1.0
    if cpus > hardware.cpus:
        raise SearchError(f"cpus_per_trial={cpus:g} but the Ray cluster has {hardware.cpus:g} CPUs")
    return cpus, gpus, max(1, max_concurrent_trials(hardware.cpus, hardware.gpus, cpus, gpus, per_node))


@dataclass(frozen=True)
class Probe:
    """Seconds per training step of one configuration, measured here, and its GPU memory peak."""

    step_seconds: float
    threads: int
    peak_gpu_bytes: int = 0
    seconds: float = 0.0


def probe(config: TrainConfig, train: Dataset, device: torch.device, steps: int = 3,
          threads: int | None = None) -> Probe:
    """Time ``steps`` training steps of ``config`` on ``train``'s first images (after a warm-up
    pass over them), with the real decoding and augmentation; a few seconds on a CPU for SSDlite. On
    ``threads`` torch threads when given (a CPU trial's slot), else on this process's."""
    from ..data.loader import make_loader
    from ..engine.state import TrainState
    from ..engine.train import train_one_epoch
    from ..models import build

    start = time.monotonic()
    detector = build(config.model, len(train.classes), pretrained=config.pretrained, image_size=config.image_size,
                     load_pretrained=False)
    state = TrainState(detector, config.replace(ema_decay=0.0), device)
    images = train.subset(min(len(train), config.batch_size * (steps + 1)))

    def run(subset: Dataset) -> dict:
        loader = make_loader(subset, config.batch_size, train=True, augment=config.augment, num_workers=0,
                             seed=config.seed, max_side=2 * detector.input_side)
        return train_one_epoch(state.model, state.optimizer, loader, device, amp_dtype=state.amp_dtype,
                               scaler=state.scaler, grad_clip=config.grad_clip)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    own_threads = torch.get_num_threads()
    torch.set_num_threads(threads or own_threads)
    try:
        # Warm-up on the very images then timed: allocations, kernels and the file cache, so that two
        # probes (the whole machine, a trial's threads) compare steps, not a cold start with a warm one.
        run(images)
        timed = run(images)
    finally:
        torch.set_num_threads(own_threads)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    state = detector = None  # free the model before empty_cache (run() holds them too)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    step = timed["seconds"] / max(1, timed["steps"])
    return Probe(step, threads or own_threads, int(peak), time.monotonic() - start)


def gpu_share(peak_bytes: int, total_bytes: int | None, trials: int, gpus: float) -> float:
    """The GPU fraction per trial: 1, 1/2 or 1/4, as many trials per GPU as memory holds (with
    headroom for larger batches of augmented images) when more trials are asked than GPUs."""
    if not total_bytes or not peak_bytes or trials <= max(1.0, gpus):
        return 1.0
    fits = int(0.7 * total_bytes // (1.5 * peak_bytes))
    per_gpu = min(4, fits, math.ceil(trials / max(1.0, gpus)))
    return 1.0 / (4 if per_gpu >= 4 else 2 if per_gpu >= 2 else 1)


@dataclass(frozen=True)
class SearchPlan:
    """How a search spends its budget (``fit`` prints :meth:`describe` before it starts).

    Attributes:
        asked: the ``num_trials`` asked.
        num_run: trials that run: the default first, then the portfolio, then samples.
        concurrency: trials at once; cpus_per_trial / gpus_per_trial their resources.
        default_seconds: the default trial's time (its slot for the whole search), None without
            a budget; trial_seconds: each other trial's share.
        trial_steps: optimizer steps the probe expects a non-default trial to get.
        step_seconds: a trial's seconds per step, from the probe (None when not probed).
        needed_seconds: the search budget that would run every asked trial (None: all run);
            ``fit`` turns it into a ``time_limit``.
        floor_steps: the fidelity floor the plan applied (steps a trial needs to be ranked).
        alone_step_seconds: set only when the default trains alone because trials beside it
            would share its CPUs: its seconds per step alone on the whole machine.
    """

    asked: int
    num_run: int
    concurrency: int
    cpus_per_trial: float
    gpus_per_trial: float
    default_seconds: float | None = None
    trial_seconds: float | None = None
    trial_steps: int | None = None
    step_seconds: float | None = None
    needed_seconds: float | None = None
    floor_steps: int = FIDELITY_FLOOR_STEPS
    workers_per_trial: int = 1
    alone_step_seconds: float | None = None

    @property
    def not_run(self) -> int:
        """Trials the plan does not run (shown as ``not run``, with :attr:`not_run_reason` as detail)."""
        return self.asked - self.num_run

    @property
    def not_run_reason(self) -> str:
        """Why the trials not run were left out: "budget" (each would get under ``floor_steps``)
        or "shared CPUs" (beside the default they would slow its slot below
        :data:`DEFAULT_SPEED_KEPT` of its speed alone)."""
        return "budget" if self.alone_step_seconds is None else "shared CPUs"

    def why_not_run(self, needed_time_limit: float | None = None) -> str:
        """Why the trials not run were left out, in a clause (with the ``time_limit`` that would
        run them all, when the budget is the reason and the caller knows it)."""
        if self.alone_step_seconds is not None:
            lost = 1 - self.alone_step_seconds / self.step_seconds
            return (f"on {self.cpus_per_trial:g} CPU each a step would take {self.step_seconds:.2f} s against "
                    f"{self.alone_step_seconds:.2f} s for the default alone on every core: trials beside it would "
                    f"cost it {lost:.0%} of its steps; pass cpus_per_trial to share the cores anyway")
        why = f"each would get under {self.floor_steps} steps, too few to rank it"
        return why if needed_time_limit is None else \
            f"{why}; time_limit >= {needed_time_limit:.0f} s would run all {self.asked}"

    def describe(self, needed_time_limit: float | None = None, in_process: bool = False) -> str:
        """A few lines for the user: what runs, where, for how long, and what does not
        (with the ``time_limit`` that would run it all, when the caller knows it)."""
        if self.num_run == 1:
            where = ", alone in this process until the time limit" if in_process else \
                ("" if self.default_seconds is None else f", for {self.default_seconds:.0f} s")
            lines = [f"search plan: 1 of {self.asked} trials, the preset's default{where}"]
        else:
            where = f"{self.cpus_per_trial:g} CPU" + (f" + {self.gpus_per_trial:g} GPU" if self.gpus_per_trial else "")
            if self.workers_per_trial > 1:
                where += f" in {self.workers_per_trial} data-parallel workers"
            lines = [f"search plan: {self.num_run} of {self.asked} trials, {self.concurrency} at a time ({where} each)"]
            if self.default_seconds is not None:
                lines.append(f"  the preset's default trains for {self.default_seconds:.0f} s; the {self.num_run - 1} "
                             f"others (portfolio first, then samples) about {self.trial_seconds:.0f} s each"
                             + (f" (~{self.trial_steps} steps)" if self.trial_steps else ""))
        if self.not_run:
            lines.append(f"  not run ({self.not_run_reason}): {self.not_run} ({self.why_not_run(needed_time_limit)})")
        return "\n".join(lines)


def make_plan(asked: int, seconds: float | None, slots: int, cpus_per_trial: float, gpus_per_trial: float,
              step_seconds: float | None, *, max_steps: int | None = None, overhead: float = SEARCH_OVERHEAD_S,
              floor_steps: int | None = None, alone_step_seconds: float | None = None) -> SearchPlan:
    """The plan for ``asked`` trials in ``seconds`` on ``slots`` parallel slots.

    The default trial keeps one slot for the whole time (with a single slot, at least half of
    it, the others following it); the other trials share what is left equally, each needing
    ``floor_steps`` steps of ``step_seconds``. As many as that carries run, in order; the rest
    are not run. Without a step time (a grid, a resumed search) every asked trial runs with an
    equal share; without a budget, trained by epochs as before. ``floor_steps`` defaults to
    :data:`FIDELITY_FLOOR_STEPS`; a trial capped at ``max_steps`` (the user's ``epochs``) needs
    no more than those. With ``alone_step_seconds`` (CPU trials, the default's step alone on
    the whole machine) and several slots, the default trains alone when its slot would keep
    less than :data:`DEFAULT_SPEED_KEPT` of that speed: then the cores are worth more to it.
    """
    floor_steps = FIDELITY_FLOOR_STEPS if floor_steps is None else floor_steps
    floor_steps = floor_steps if max_steps is None else max(1, min(floor_steps, max_steps))
    concurrency = max(1, min(slots, asked))
    resources = dict(cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, floor_steps=floor_steps)
    if seconds is None:
        return SearchPlan(asked, asked, concurrency, **resources)
    usable = max(0.0, seconds - overhead)
    if step_seconds is None:  # not probed: every trial gets an equal share of the slots' time
        share = usable * concurrency / asked
        return SearchPlan(asked, asked, concurrency, default_seconds=share, trial_seconds=share, **resources)
    floor_seconds = floor_steps * step_seconds * 1.1  # + validations
    if asked == 1:
        return SearchPlan(1, 1, 1, default_seconds=usable, step_seconds=step_seconds, **resources)
    if alone_step_seconds is not None and slots >= 2 and alone_step_seconds < DEFAULT_SPEED_KEPT * step_seconds:
        return SearchPlan(asked, 1, 1, default_seconds=usable, step_seconds=step_seconds,
                          alone_step_seconds=alone_step_seconds, **resources)
    if slots >= 2:
        others = min(asked - 1, int((slots - 1) * usable // floor_seconds))
        default_seconds = usable
        share = min(usable, (slots - 1) * usable / max(1, others))
    else:  # one slot: the default first, with at least half the time, then the others in turn
        others = min(asked - 1, int(usable / 2 // floor_seconds))
        default_seconds = max(usable / 2, usable - others * floor_seconds)
        share = (usable - default_seconds) / max(1, others)
    needed = None
    if others < asked - 1:
        needed = (asked - 1) * floor_seconds / (slots - 1) if slots >= 2 else 2 * (asked - 1) * floor_seconds
        needed = math.ceil(needed + overhead)
    if others == 0:
        return SearchPlan(asked, 1, 1, default_seconds=usable, step_seconds=step_seconds, needed_seconds=needed,
                          **resources)
    return SearchPlan(asked, others + 1, max(1, min(slots, others + 1)), default_seconds=default_seconds,
                      trial_seconds=share, trial_steps=round(share / (step_seconds * 1.1)), step_seconds=step_seconds,
                      needed_seconds=needed, **resources)


def trial_step_seconds(measured: Probe, gpus_per_trial: float) -> float:
    """A trial's seconds per step from the probe's: on a shared GPU, as if the trials sharing it
    took turns (a pessimistic bound); on CPUs, the probe's (made on the trial's threads)."""
    return measured.step_seconds / min(1.0, gpus_per_trial) if gpus_per_trial > 0 else measured.step_seconds


@dataclass(frozen=True)
class SearchRequest:
    """What ``fit`` asks of a search: the merged base configuration, the searched space, the
    first points (the preset's default, then its portfolio) and the user's search arguments."""

    base: TrainConfig
    space: dict
    points: list[dict]
    num_trials: int
    gpus_per_trial: float | None
    cpus_per_trial: float | None
    ray_address: str | None
    searcher: str
    seed: int
    resume: bool
    output: Path
    progress: bool
    loggers: tuple[str, ...] = ()
    """Checked logger names (:func:`detect_automl.loggers.check_loggers`), writing to ``output/logs``."""
    workers_per_trial: int = 1
    """Data-parallel Ray Train workers per trial (:func:`trial_workers`), splitting its resources."""

    @property
    def grid(self) -> int:
        """Configurations per sample when the space has ``grid_search`` entries (1 otherwise)."""
        return math.prod(len(v["grid_search"]) for v in self.space.values()
                         if isinstance(v, dict) and "grid_search" in v)


def plan_search(request: SearchRequest, train: Dataset, budget: Budget | None) -> SearchPlan:
    """Probe the default configuration's step time here (seconds), then plan the search on the
    hardware (this machine, the Ray this process is connected to, or the cluster at
    ``request.ray_address``) for ``budget``.

    A resumed search or a grid keeps every asked trial (as it was first planned / the grid);
    so does a search whose trials need a GPU this process does not have (nothing to probe on).
    """
    hardware = _hardware(request.ray_address)
    asked = request.num_trials * request.grid
    cpus, gpus, slots = trial_resources(hardware, request.gpus_per_trial, request.cpus_per_trial, trials=asked)
    probed = budget is not None and asked > 1 and not request.resume and request.grid == 1 \
        and (gpus == 0 or torch.cuda.is_available())
    if not probed:
        plan = make_plan(asked, None if budget is None else budget.remaining(), slots, cpus, gpus, None)
    else:
        default = request.base.replace(**(request.points[0] if request.points else {}))
        device = torch.device("cuda" if gpus > 0 else "cpu")
        measured = probe(default, train, device)
        log.info("probe: %.3f s per step of %s at batch %d on %d threads (%.1f s)", measured.step_seconds,
                 default.model, default.batch_size, measured.threads, measured.seconds)
        if request.gpus_per_trial is None and gpus > 0:  # the GPU fraction the probe's memory allows
            share = gpu_share(measured.peak_gpu_bytes, hardware.gpu_memory, asked, hardware.gpus)
            cpus, gpus, slots = trial_resources(hardware, None, request.cpus_per_trial, share)
        alone = None
        slot_threads = max(1, int(cpus))
        if gpus == 0 and slot_threads < measured.threads:  # a CPU trial's slot has fewer threads: time it
            mine = request.cpus_per_trial is None and request.ray_address is None  # the plan's own choice, here
            alone = measured.step_seconds if mine else None
            measured = probe(default, train, device, threads=slot_threads)
            log.info("probe: %.3f s per step on a trial's slot of %d thread(s)", measured.step_seconds,
                     measured.threads)
        capped = None if request.base.epochs is None else \
            request.base.epochs * math.ceil(len(train) / request.base.batch_size)
        plan = make_plan(asked, budget.remaining(), slots, cpus, gpus, trial_step_seconds(measured, gpus),
                         max_steps=capped, alone_step_seconds=alone)
    return dataclasses.replace(plan, workers_per_trial=request.workers_per_trial)


def _hardware(address: str | None) -> Hardware:
    """What the trials will run on: the Ray this process already uses, the cluster at
    ``address``, or this machine as a local Ray would see it."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return Hardware.of_ray()
    return Hardware.local() if address is None else Hardware.of_cluster(address)
