"""Search faults: out of memory, a diverging trial, a killed trial worker; the search goes on."""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

import detect_automl as da
from detect_automl.config import TrainConfig

FIXED = {"pretrained": None, "batch_size": 2, "epochs": 3, "warmup_steps": 2}


def _script_training(monkeypatch, maps: dict[int, float], oom_epochs: set[int]):
    """Scripted validation mAPs per epoch, and CUDA out-of-memory on the first try of some epochs."""
    train_module = importlib.import_module("detect_automl.engine.train")  # the package's `train` is the function

    real_epoch, failed, current = train_module.train_one_epoch, set(), {"epoch": 0}

    def one_epoch(model, optimizer, loader, device, **kwargs):
        epoch = int(kwargs["desc"].split()[1].split("/")[0])
        current["epoch"] = epoch
        if epoch in oom_epochs and epoch not in failed:
            failed.add(epoch)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_epoch(model, optimizer, loader, device, **kwargs)

    def evaluate(model, loader, class_names, device, **kwargs):
        value = maps[current["epoch"]]
        return {"map": value, "map_50": value, "map_75": value, "seconds": 0.01, "num_images": 3,
                "num_images_total": 3}

    monkeypatch.setattr(train_module, "train_one_epoch", one_epoch)
    monkeypatch.setattr(train_module, "evaluate", evaluate)
    monkeypatch.setattr(train_module, "validation_seconds_per_image", lambda *a: 0.01)


def test_out_of_memory_halves_the_batch_and_keeps_the_better_epoch(data, monkeypatch):
    from detect_automl.engine.trial import run_trial

    train, val = data
    _script_training(monkeypatch, maps={1: 0.1, 2: 0.5, 3: 0.2, 4: 0.3}, oom_epochs={3})
    kept = {}
    outcome = run_trial(TrainConfig(**{**FIXED, "epochs": 4, "batch_size": 4}), train, val, progress=False,
                        on_epoch=lambda record, state: kept.setdefault(record["epoch"], _copy(state.kept.state_dict())))
    history = outcome.result.history
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]  # epoch 3 retried once, none repeated
    assert [r["batch_size"] for r in history] == [4, 4, 2, 2]
    assert outcome.result.best_metrics["map"] == 0.5 and outcome.result.best_metrics["epoch"] == 2
    saved = outcome.detector.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in kept[2].items())  # epoch 2's weights, not the last


def _copy(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


def test_out_of_memory_at_batch_one_fails_the_trial(data, monkeypatch):
    from detect_automl.engine.trial import run_trial

    train, val = data
    _script_training(monkeypatch, maps={1: 0.1}, oom_epochs={1})
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_trial(TrainConfig(**{**FIXED, "batch_size": 1}), train, val, progress=False)


def test_a_diverging_trial_is_reported_and_never_kept(data, tmp_path):
    train, val = data
    detector = da.fit(train, val, time_limit=120, num_trials=1, output_dir=tmp_path, progress=False,
                      hyperparameters={**FIXED, "optimizer": "sgd", "grad_clip": 0.0},
                      search_space={"lr": {"grid_search": [1e-3, 1e9]}})
    board = detector.leaderboard()
    exploded = board[board["lr"] == 1e9].iloc[0]
    assert exploded["status"] == "diverged" and "loss diverged" in exploded["detail"]
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
    failed = board[board["status"] == "failed"]
    assert len(failed) == 1, board[["trial_id", "status"]]
    assert failed.iloc[0]["detail"].startswith("lost its Ray worker"), failed.iloc[0]["detail"]
    assert len(board) == 3 and board["val_map"].iloc[:2].notna().all()
    assert detector.metrics["trial_id"] not in set(failed["trial_id"])
    assert (detector.path / "model.pt").is_file()
