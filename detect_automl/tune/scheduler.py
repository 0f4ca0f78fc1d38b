"""The trial scheduler: Ray Tune's ASHA, keeping the preset's default trial, or FIFO."""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from .space import is_default

__all__ = ["DefaultKeepingASHA", "make_scheduler"]


class DefaultKeepingASHA(ASHAScheduler):
    """Ray's ASHA, except that the trial whose config matches ``protected`` is never stopped
    before ``max_t``. Its results still enter every rung, so the others are measured against it.

    From scratch, a first rung's mAP is mostly noise (the rung rank correlations are in
    benchmarks/RESULTS.md), and the prior that the preset's default is good is
    worth more than one noisy comparison.
    """

    def __init__(self, protected: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.protected = dict(protected or {})

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        keep = is_default(trial.config, self.protected)
        if action == TrialScheduler.STOP and keep and result.get(self._time_attr, 0) < self._max_t:
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action


def make_scheduler(epochs: int | None, grace_epochs: int, trial_budget: float | None, *, queued: bool = True,
                   protected: dict | None = None) -> TrialScheduler:
    """ASHA on wall time when trials are time-bounded (rungs at 1/4, 1/2, 1 of a trial's share),
    on epochs otherwise; a trial below the median at a rung stops and its slot goes to the next.
    ``protected`` (the preset's default, tried first) is never stopped early.

    Without ``queued`` trials (every trial has a slot from the start) a stopped trial's slot would
    stay idle, so nothing is stopped early: every trial trains until it ends or the deadline.
    """
    if not queued or (trial_budget is None and epochs is None):  # nothing waits, or no rung to measure on
        return FIFOScheduler()
    if trial_budget is not None:
        return DefaultKeepingASHA(protected, time_attr="time_total_s", max_t=trial_budget * 2,
                                  grace_period=trial_budget / 4, reduction_factor=2)
    # On the epoch number, not Tune's report count: with eval_every > 1 only validated epochs report.
    return DefaultKeepingASHA(protected, time_attr="epoch", max_t=max(epochs, 1),
                              grace_period=min(grace_epochs, epochs), reduction_factor=2)
