"""Search faults: out of memory, a diverging trial, a killed trial worker; the search goes on."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

import detect_automl as da
from detect_automl.config import TrainConfig
from detect_automl.tune.trainable import run_with_oom_retry

FIXED = {"pretrained": None, "batch_size": 2, "epochs": 3, "warmup_steps": 2}


def test_out_of_memory_halves_the_batch_until_it_fits():
    tried = []

    def attempt(config: TrainConfig) -> None:
        tried.append(config.batch_size)
        if config.batch_size > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    run_with_oom_retry(attempt, TrainConfig(batch_size=16))
    assert tried == [16, 8, 4]


def test_out_of_memory_at_batch_one_fails_the_trial():
    def attempt(config: TrainConfig) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_with_oom_retry(attempt, TrainConfig(batch_size=2))


@pytest.fixture(scope="module")
def data(datasets_dir):
    return (da.Dataset(datasets_dir / "raccoon", split="train").subset(8),
            da.Dataset(datasets_dir / "raccoon", split="val").subset(3))


def test_a_diverging_trial_is_reported_and_never_kept(data, tmp_path):
    train, val = data
    detector = da.fit(train, val, time_limit=120, num_trials=1, output_dir=tmp_path, progress=False,
                      hyperparameters={**FIXED, "optimizer": "sgd", "grad_clip": 0.0},
                      search_space={"lr": {"grid_search": [1e-3, 1e9]}})
    board = detector.leaderboard()
    exploded = board[board["lr"] == 1e9].iloc[0]
    assert exploded["status"].startswith("diverged: ") and "loss diverged" in exploded["status"]
    assert detector.config.lr == 1e-3 and board.iloc[0]["lr"] == 1e-3


def _trial_workers() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def test_a_killed_trial_worker_does_not_lose_the_other_trials(data, tmp_path):
    """SIGKILL one running trial's worker process (as the OOM killer would) mid-search."""
    train, val = data
    killed = []

    def kill_first_worker() -> None:
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            results = list((tmp_path / "trials").glob("search/*/result.json"))
            workers = _trial_workers()
            if results and any(r.stat().st_size for r in results) and workers:
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
            time.sleep(0.2)

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    detector = da.fit(train, val, time_limit=150, num_trials=1, output_dir=tmp_path, progress=False,
                      hyperparameters={**FIXED, "epochs": 4}, search_space={"lr": {"grid_search": [1e-3, 2e-3, 3e-3]}})
    killer.join()
    assert killed, "no trial worker was found to kill"
    board = detector.leaderboard()
    failed = board[board["status"].str.startswith("failed")]
    assert len(failed) == 1, board[["trial_id", "status"]]
    assert len(board) == 3 and board["val_map"].iloc[:2].notna().all()
    assert detector.metrics["trial_id"] not in set(failed["trial_id"])
    assert (detector.path / "model.pt").is_file()
