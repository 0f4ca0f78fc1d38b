"""The leader's continuation: the time a search leaves over trains its best trial further."""

from __future__ import annotations

import logging

import pandas as pd
import torch

from ..budget import Budget
from ..config import TrainConfig
from ..data.dataset import Dataset
from ..engine.trial import run_trial
from ..leaderboard import TrialStatus, end_status, history_record, sort_leaderboard
from ..models import Detector

__all__ = ["continuation_device", "continue_best"]

log = logging.getLogger(__name__)


def continuation_device(gpus_per_trial: float) -> torch.device | None:
    """Where the best trial continues: the kind of device it trained on, or None (with a note)
    when this process has none such (a CPU-only driver of a GPU cluster)."""
    if gpus_per_trial <= 0:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    log.info("not continuing the best trial with the time left: it trained on a GPU and this process has none")
    return None


def continue_best(detector: Detector, config: TrainConfig, train: Dataset, val: Dataset, board: pd.DataFrame,
                  history: dict, metrics: dict, budget: Budget, time_limit: float, progress: bool,
                  gpus_per_trial: float) -> tuple[pd.DataFrame, dict]:
    """Spend the time the search left over (trials stopped early by ASHA or converged free it)
    on the best trial.

    Only a best trial that its time share ended (completed, its last epoch ``time_limit_hit``) is
    continued, in this process on the kind of device it trained on, from its best checkpoint at
    half its learning rate (a warm restart of the cosine, planned to ``budget``), and only when
    the time left holds a validation and a fifth of an epoch as long as its last ones (a run
    stops between steps); its row and history are updated, and the detector keeps whichever
    epoch validates best, so a continuation that does not help changes nothing.
    """
    trial_id = metrics["trial_id"]
    row = board.index[board["trial_id"] == trial_id][0]
    left = budget.remaining()
    last = (history.get(trial_id) or [{}])[-1]
    # A validation and a fifth of an epoch at least: the run stops between steps, planned to its end.
    needed = 1.5 * float(last.get("val_seconds") or 0.0) + 0.2 * float(last.get("train_seconds") or 0.0)
    cut_by_time = board.at[row, "status"] == TrialStatus.COMPLETED.value and bool(last.get("time_limit_hit"))
    if not cut_by_time or left < max(10.0, 0.02 * time_limit, needed):
        return board, metrics
    done = int(board.at[row, "epochs"])
    if config.epochs is not None and done >= config.epochs:
        return board, metrics
    device = continuation_device(gpus_per_trial)
    if device is None:
        return board, metrics
    log.info("continuing trial %s for the %.0f s the search left over", trial_id, left)
    more = config.replace(lr=config.lr * 0.5, warmup_steps=min(config.warmup_steps, 10))
    outcome = run_trial(more, train, val, device=device, resume={"state_dict": detector.state_dict(), "epoch": done},
                        budget=budget, progress=progress)
    records = [history_record(r) for r in outcome.result.history]
    history[trial_id] = history.get(trial_id, []) + records
    board = board.copy()
    board.at[row, "epochs"] = records[-1]["epoch"] if records else done
    board.at[row, "seconds"] = round(float(board.at[row, "seconds"]) + outcome.seconds, 1)
    status, detail = end_status(outcome.result.stopped)
    board.at[row, "status"], board.at[row, "detail"] = status.value, f"{detail}; continued with the time left"
    new = outcome.result.best_metrics
    if new and (new["map"], new["map_50"]) > (metrics["map"], metrics["map_50"]):
        detector.load_state_dict(outcome.detector.state_dict())
        metrics = {"map": new["map"], "map_50": new["map_50"], "trial_id": trial_id}
        board.at[row, "val_map"], board.at[row, "val_map_50"] = new["map"], new["map_50"]
    return sort_leaderboard(board.to_dict("records")), metrics
