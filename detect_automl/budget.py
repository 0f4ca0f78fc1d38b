"""Budget: one time budget, as a wall-clock deadline that every process and node can read, and
the seconds of ``time_limit`` that cannot train (one home for every such overhead)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .errors import InputError

__all__ = ["Budget", "SEARCH_OVERHEAD_S", "wrap_up_seconds", "time_limit_holding"]

# What of a time_limit cannot train, measured on 2 CPU cores and one GPU: Ray's start 3-6 s and a
# worker's start per slot (inside the search's budget); Tune's wrap-up and shutdown 2-10 s (more
# with GPU trials), then restoring and saving the best (after it).
SEARCH_OVERHEAD_S = 10.0
"""Seconds of a search's budget its trials cannot train in: Ray's start and a worker's start per slot."""


def wrap_up_seconds(time_limit: float | None, searching: bool) -> float:
    """Seconds kept back from ``time_limit`` for restoring and saving the best (and stopping Ray).

    Raises:
        InputError: ``time_limit`` is too short to leave a second of training after them.
    """
    if time_limit is None:
        return 0.0
    reserve = min(60.0, 8.0 + 0.04 * float(time_limit)) if searching else 3.0
    if float(time_limit) <= reserve + 1.0:
        raise InputError(f"time_limit={time_limit} s is too short: at least {reserve + 1.0:.0f} s are needed")
    return reserve


def time_limit_holding(seconds: float) -> float:
    """The smallest whole ``time_limit`` of a search that leaves ``seconds`` after its wrap-up
    (the inverse of :func:`wrap_up_seconds`, branch by branch)."""
    candidates = [math.ceil(limit) for limit in ((seconds + 8.0) / 0.96, seconds + 60.0)]
    return min(limit for limit in candidates if limit - wrap_up_seconds(limit, True) >= seconds - 1e-6)


@dataclass(frozen=True)
class Budget:
    """A deadline for some work: ``fit`` as a whole, the search in it, one trial.

    It is a wall-clock time (``time.time()``) so that it means the same in every process of a
    Ray cluster; inside one process, loops compare against :meth:`monotonic`, which does not
    jump when the system clock is adjusted. A ``Budget`` is a value: the methods that narrow it
    return a new one.

    >>> budget = Budget.from_seconds(600)
    >>> 599 < budget.remaining() <= 600
    True
    """

    deadline: float
    """``time.time()`` by which the work must be done."""

    @classmethod
    def from_seconds(cls, seconds: float, start: float | None = None) -> Budget:
        """The budget of ``seconds`` from ``start`` (default: now)."""
        return cls((time.time() if start is None else start) + float(seconds))

    def remaining(self) -> float:
        """Seconds left (negative once past the deadline)."""
        return self.deadline - time.time()

    def expired(self, margin: float = 0.0) -> bool:
        """True when fewer than ``margin`` seconds are left."""
        return self.remaining() <= margin

    def monotonic(self) -> float:
        """The deadline on this process's ``time.monotonic()`` clock."""
        return time.monotonic() + self.remaining()

    def minus(self, seconds: float) -> Budget:
        """The budget that ends ``seconds`` earlier (time kept back for what follows)."""
        return Budget(self.deadline - float(seconds))

    def share(self, seconds: float | None) -> Budget:
        """At most ``seconds`` from now, and never past this budget (``None``: all of it)."""
        return self if seconds is None else Budget(min(self.deadline, time.time() + float(seconds)))
