"""Budget: one time budget, as a wall-clock deadline that every process and node can read."""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["Budget"]


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
