"""Leaderboard rows, trial statuses, ordering and the rule that picks the trial to keep."""

from __future__ import annotations

from enum import Enum

import pandas as pd

__all__ = ["COLUMNS", "HISTORY_KEYS", "TrialStatus", "end_status", "history_record", "leaderboard_row",
           "sort_leaderboard", "select_best"]

COLUMNS = ["trial_id", "model", "val_map", "val_map_50", "epochs", "seconds", "status", "detail"]


class TrialStatus(str, Enum):
    """How a trial ended: the leaderboard's ``status`` column. Why, in words, goes in ``detail``
    (the error, "budget", "out of memory: batch 2", "continued"), which no code parses."""

    COMPLETED = "completed"
    """Trained until its time budget ended (the planned end) or through the epochs it was capped at."""
    CONVERGED = "converged"
    """Stopped before its budget: its validation mAP stopped improving (``TrainConfig.patience``)."""
    EARLY_STOPPED = "early-stopped"
    """Stopped by the search's scheduler (ASHA) at a rung, behind the others."""
    INTERRUPTED = "interrupted"
    """Stopped by the user (Ctrl-C); a resumed search continues it."""
    NOT_RUN = "not run"
    """Never trained: the plan left it out (detail "budget" or "shared CPUs") or the search ended
    before it started."""
    FAILED = "failed"
    DIVERGED = "diverged"
    """Its loss became NaN or infinite."""

    def __str__(self) -> str:
        return self.value


def end_status(stopped: str, batch_used: int | None = None, batch_size: int | None = None) -> tuple[TrialStatus, str]:
    """Status and detail of a run that trained to its end, from :attr:`TrainResult.stopped`
    ("epochs", "time_limit" or "converged"), noting a batch halved for lack of GPU memory."""
    if stopped == "converged":
        status, detail = TrialStatus.CONVERGED, "val mAP plateau"
    else:
        status, detail = TrialStatus.COMPLETED, "time limit" if stopped == "time_limit" else "epochs"
    if batch_used is not None and batch_size is not None and int(batch_used) != int(batch_size):
        detail += f"; out of memory: batch {int(batch_used)}"
    return status, detail
HISTORY_KEYS = ("epoch", "loss", "val_map", "val_map_50", "val_map_75", "val_images", "train_seconds", "val_seconds",
                "time_limit_hit")
"""What ``history.json`` keeps of each epoch (``val_images``: the images a validation cut short
by the deadline scored; ``time_limit_hit``: the run's time ended with this epoch)."""


def history_record(record: dict) -> dict:
    """The ``HISTORY_KEYS`` of one epoch's record (those present)."""
    return {k: record[k] for k in HISTORY_KEYS if k in record}


def leaderboard_row(trial_id: str, config: dict, history: list[dict], seconds: float, status: TrialStatus,
                    detail: str = "") -> dict:
    """One trial: id, model, best val mAP / mAP@50, epochs done, seconds, status, detail, hyperparameters.

    The configured maximum number of epochs appears as ``max_epochs`` (``epochs`` is what ran: the
    last epoch recorded, since a search records only validated epochs).
    """
    scored = [r for r in history if r.get("val_map") is not None]
    best = max(scored, key=lambda r: (r["val_map"], r.get("val_map_50") or 0.0), default={})
    hyper = {("max_epochs" if k == "epochs" else k): v for k, v in config.items() if k != "model"}
    return {"trial_id": str(trial_id), "model": config["model"], "val_map": best.get("val_map"),
            "val_map_50": best.get("val_map_50"), "epochs": int(history[-1]["epoch"]) if history else 0,
            "seconds": round(float(seconds), 1),
            "status": TrialStatus(status).value, "detail": detail, **hyper}


def sort_leaderboard(rows: list[dict]) -> pd.DataFrame:
    """Rows as a DataFrame, best first (val mAP, then mAP@50; trials without a score last)."""
    board = pd.DataFrame(rows) if rows else pd.DataFrame(columns=COLUMNS)
    if board.empty:
        return board
    return board.sort_values(["val_map", "val_map_50"], ascending=False, na_position="last",
                             kind="stable").reset_index(drop=True)


def select_best(board: pd.DataFrame) -> str | None:
    """The trial id to keep: highest val mAP, ties by mAP@50, among trials that did not fail.

    A failed or diverged trial is never kept, even if it reported a good mAP before it failed: its last
    weights may come from a state that then diverged or ran out of memory.
    """
    if board.empty:
        return None
    failed = board["status"].isin([TrialStatus.FAILED.value, TrialStatus.DIVERGED.value])
    ok = board[~failed & board["val_map"].notna()]
    if ok.empty:
        return None
    ranked = ok.sort_values(["val_map", "val_map_50"], ascending=False, kind="stable")
    return str(ranked.iloc[0]["trial_id"])
