"""Ray Tune search on CPU with small real subsets: leaderboard, best restore, failures, time, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

import detect_automl as da
from detect_automl.leaderboard import select_best
from detect_automl.tune.plan import max_concurrent_trials
from detect_automl.tune.space import preset_config

FIXED = {"pretrained": None, "batch_size": 2, "epochs": 3, "warmup_steps": 2}


def test_fractional_gpus_pack_per_gpu_not_across():
    assert max_concurrent_trials(64, 8, 1, 0.15) == 48  # 6 per GPU, 8 GPUs (ray#5902)
    assert max_concurrent_trials(64, 8, 1, 0.15, gpus_per_node=[4, 4]) == 48
    assert max_concurrent_trials(2, 0, 1, 0) == 2  # CPU-only: one trial per CPU
    assert max_concurrent_trials(16, 1, 4, 0.25) == 4
    assert max_concurrent_trials(16, 1, 8, 0.25) == 2  # CPUs bound it
    assert max_concurrent_trials(16, 3, 1, 2) == 1  # a 2-GPU trial cannot span two nodes' leftovers


def test_best_trial_rule_skips_failed_trials_even_with_a_higher_map():
    board = pd.DataFrame([
        {"trial_id": "a", "val_map": 0.9, "val_map_50": 0.9, "status": "diverged", "detail": "TrainingError: loss"},
        {"trial_id": "b", "val_map": 0.4, "val_map_50": 0.6, "status": "early-stopped"},
        {"trial_id": "c", "val_map": 0.4, "val_map_50": 0.7, "status": "completed"},
        {"trial_id": "d", "val_map": None, "val_map_50": None, "status": "not run", "detail": "budget"},
    ])
    assert select_best(board) == "c"  # ties on mAP broken by mAP@50
    assert select_best(board.iloc[[0, 3]]) is None


def test_search_ranks_trials_restores_the_best_and_survives_a_failing_trial(data, tmp_path, tensorboard_scalars):
    train, val = data
    start = time.time()
    detector = da.fit(train, val, time_limit=150, num_trials=1, hyperparameters=FIXED,
                      search_space={"lr": {"grid_search": [1e-3, -1.0, 3e-3]}, "augment": [0.0, 0.5]},
                      output_dir=tmp_path, progress=False, loggers=["tensorboard", "csv"])
    elapsed = time.time() - start
    board = detector.leaderboard()
    assert len(board) == 3
    assert list(board.columns[:7]) == ["trial_id", "model", "val_map", "val_map_50", "epochs", "seconds", "status"]
    failed = board[board["lr"] == -1.0]
    assert len(failed) == 1 and failed.iloc[0]["status"] == "failed"
    assert "lr must be > 0" in failed.iloc[0]["detail"]
    ok = board[board["lr"] != -1.0]
    assert ok["val_map"].notna().all() and list(ok["val_map"]) == sorted(ok["val_map"], reverse=True)
    assert board.index[board["lr"] == -1.0][0] == 2  # unscored trials sort last
    # The detector is the top row's trial, restored from its best checkpoint.
    top = board.iloc[0]
    assert detector.metrics["trial_id"] == top["trial_id"] and detector.config.lr == top["lr"]
    # Tune keeps the best epoch's checkpoint and the latest one (for a resume): the detector is the best's.
    kept = [torch.load(f, weights_only=True) for f in
            (tmp_path / "trials" / "search").glob(f"*{top['trial_id']}*/checkpoint_*/detector.pt")]
    best_epoch = max(detector.history[top["trial_id"]], key=lambda r: (r["val_map"], r["val_map_50"]))["epoch"]
    (saved,) = [c["state_dict"] for c in kept if c["epoch"] == best_epoch]
    restored = detector.model.state_dict()
    assert 1 <= len(kept) <= 2 and all(torch.equal(restored[k].cpu(), v) for k, v in saved.items())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the 1-CPU trial: float sums then match to the last bit
    try:
        assert detector.evaluate(val)["map"] == pytest.approx(top["val_map"], abs=1e-9)
    finally:
        torch.set_num_threads(threads)
    history = json.loads((detector.path / "history.json").read_text())
    assert set(history) == set(board["trial_id"]) and len(history[top["trial_id"]]) == top["epochs"]
    # Saved under the user's output_dir, reloads without Ray and predicts the same.
    assert detector.path == tmp_path / "model" and (tmp_path / "trials" / "search").is_dir()
    loaded = da.ObjectDetector.load(detector.path)
    image = str(val[0].path)
    np.testing.assert_array_equal(loaded.predict(image, score_threshold=0).boxes,
                                  detector.predict(image, score_threshold=0).boxes)
    assert elapsed < 150
    # loggers=: Tune's own TensorBoard and CSV callbacks wrote each trial's validated epochs to logs/.
    for row in ok.itertuples():
        reported = detector.history[row.trial_id]  # validated epochs, as the trial reported them
        scalars = tensorboard_scalars(tmp_path / "logs" / "tensorboard" / row.trial_id)
        assert list(scalars["ray/tune/val_map"].values()) == pytest.approx([r["val_map"] for r in reported], abs=1e-6)
        assert len(scalars["ray/tune/lr"]) == len(reported)
        progress = pd.read_csv(tmp_path / "logs" / "csv" / row.trial_id / "progress.csv")
        assert list(progress["epoch"]) == [r["epoch"] for r in reported] and (progress["lr"] > 0).all()
        assert progress["val_map"].tolist() == pytest.approx([r["val_map"] for r in reported], abs=1e-9)


class _SlowImages(da.Dataset):
    """A validation set whose images take ``delay`` s each to load: a validation as slow as a large one.

    Shipped to Ray's trial processes by value (see ``slow_val``), so the slowness reaches them.
    """

    delay = 1.0

    def __getitem__(self, index):
        time.sleep(self.delay)
        return super().__getitem__(index)


@pytest.fixture
def slow_val(data):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield _SlowImages.from_records(data[1].records, data[1].classes)
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.parametrize("num_trials", [1, 2])
def test_time_limit_bounds_the_whole_fit_with_a_slow_validation(data, slow_val, tmp_path, num_trials, monkeypatch):
    """Validation time is part of the budget, in one run and in a search (with eval_every > 1)."""
    monkeypatch.setattr("detect_automl.tune.plan.FIDELITY_FLOOR_STEPS", 1)  # a real search, however short
    train, _ = data
    limit = 50  # at 40 s a slower machine (1.5x) once started neither trial before its deadline
    start = time.time()
    detector = da.fit(train, slow_val, time_limit=limit, num_trials=num_trials, output_dir=tmp_path, progress=False,
                      hyperparameters={**FIXED, "epochs": 200, "eval_every": 2}, cpus_per_trial=1)
    elapsed = time.time() - start
    assert elapsed <= limit * 1.05, f"fit took {elapsed:.1f} s for time_limit={limit}"
    board = detector.leaderboard()
    ended = board[board["epochs"] > 0]
    assert ((ended["status"] == "completed") & ended["detail"].str.startswith("time limit")).any()
    assert ended["val_map"].notna().all()
    history = detector.history[board.iloc[0]["trial_id"]]
    validated = [r["epoch"] for r in history if "val_map" in r]
    assert validated and all(e % 2 == 0 for e in validated[:-1])  # every 2nd epoch, and the last
    assert (detector.path / "model.pt").is_file()


def test_every_trial_failing_raises_one_error_listing_why(data, tmp_path):
    train, val = data
    with pytest.raises(da.SearchError) as info:
        da.fit(train, val, time_limit=60, num_trials=1, hyperparameters=FIXED, output_dir=tmp_path,
               search_space={"lr": {"grid_search": [-1.0, -2.0]}}, progress=False)
    message = str(info.value)
    assert message.count("lr must be > 0") == 2 and message.count("): failed: ") == 2 and "trials in" in message
    # A model that does not exist fails before any trial starts: the plan's probe builds it.
    start = time.time()
    with pytest.raises(da.ModelError, match="unknown model 'no_such_model'"):
        da.fit(train, val, time_limit=60, num_trials=2, hyperparameters={**FIXED, "model": "no_such_model"},
               output_dir=tmp_path / "other", progress=False)
    assert time.time() - start < 20


def test_gpu_request_without_gpus_fails_fast(data, tmp_path):
    train, val = data
    start = time.time()
    with pytest.raises(da.SearchError, match="gpus_per_trial=0.5 but the Ray cluster has 0 GPUs"):
        da.fit(train, val, time_limit=60, num_trials=2, gpus_per_trial=0.5, hyperparameters=FIXED,
               output_dir=tmp_path, progress=False)
    assert time.time() - start < 30


_INTERRUPTIBLE = """
import sys, detect_automl as da
train = da.Dataset(sys.argv[1], split="train").subset(8)
val = da.Dataset(sys.argv[1], split="val").subset(3)
da.fit(train, val, time_limit=float(sys.argv[4]), num_trials=1, hyperparameters={fixed!r}, cpus_per_trial=2,
       search_space={{"lr": {{"grid_search": {grid!r}}}}}, output_dir=sys.argv[2],
       resume=sys.argv[3] == "resume", progress=False)
"""


def _completed_trials(experiment) -> int:
    done = 0
    for result in experiment.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        done += any(r.get("epoch") == FIXED["epochs"] for r in lines)
    return done


def test_ctrl_c_keeps_the_best_and_resume_continues(datasets_dir, tmp_path):
    script = tmp_path / "search.py"
    grid = [1e-3, 2e-3, 3e-3, 4e-3]
    script.write_text(_INTERRUPTIBLE.format(fixed=FIXED, grid=grid))
    out = tmp_path / "out"
    args = [sys.executable, str(script), str(datasets_dir / "raccoon"), str(out)]
    proc = subprocess.Popen([*args, "fresh", "300"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 200
    while _completed_trials(out / "trials" / "search") < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "the search was interrupted" in output and str(out / "model") in output
    first = da.ObjectDetector.load(out / "model").leaderboard()
    finished = first[first["status"] == "completed"]
    # The cut trial shows as interrupted, unless Ctrl-C came between two trials (none started yet).
    assert 1 <= len(finished) < 4 and (first["status"].str.contains("interrupted").any() or len(first) < 4)

    # Another space is another search: refused, not silently replaced by the stored one.
    other = tmp_path / "other.py"
    other.write_text(_INTERRUPTIBLE.format(fixed=FIXED, grid=grid[:3]))
    refused = subprocess.run([sys.executable, str(other), *args[2:], "resume", "300"], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0 and "these differ now: space" in refused.stderr, refused.stderr[-2000:]

    started = time.time()
    resumed = subprocess.run([*args, "resume", "200"], capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert time.time() - started < 200 + 15  # the new time limit (+ the interpreter's start and imports)
    detector = da.ObjectDetector.load(out / "model")
    board = detector.leaderboard()
    assert len(board) == 4 and board["val_map"].notna().all()  # the rest ran, none twice
    assert board["status"].isin(["completed", "early-stopped"]).all()  # ASHA may stop weak ones
    for row in finished.itertuples():  # finished trials were kept, not re-run
        again = board[board["trial_id"] == row.trial_id]
        assert len(again) == 1 and again.iloc[0]["val_map"] == pytest.approx(row.val_map)
        assert again.iloc[0]["seconds"] == pytest.approx(row.seconds)
    for trial_id, records in detector.history.items():  # the cut trial went on from its last epoch
        assert [r["epoch"] for r in records] == list(range(1, len(records) + 1)), (trial_id, records)
    # The saved weights are the ones the leaderboard reports (the best checkpoint, not the latest).
    val = da.Dataset(datasets_dir / "raccoon", split="val").subset(3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as in the 2-CPU trials
    try:
        assert detector.evaluate(val)["map"] == pytest.approx(detector.metrics["map"], abs=1e-6)
    finally:
        torch.set_num_threads(threads)


def test_resume_without_a_previous_search_says_so(data, tmp_path, monkeypatch):
    import ray

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started before the resume was checked")

    monkeypatch.setattr(ray, "init", no_ray)  # the check comes first: nothing to start or stop
    train, val = data
    with pytest.raises(da.SearchError, match="no search to resume"):
        da.fit(train, val, time_limit=60, num_trials=2, hyperparameters=FIXED, output_dir=tmp_path,
               resume=True, progress=False)


def test_leftover_time_continues_the_best_trial_from_its_weights(data):
    from detect_automl.budget import Budget
    from detect_automl.config import TrainConfig
    from detect_automl.leaderboard import TrialStatus, leaderboard_row, sort_leaderboard
    from detect_automl.models.registry import build
    from detect_automl.tune.leader import continue_best

    train, val = data
    config = TrainConfig(model="ssdlite320_mobilenet_v3_large", **FIXED)
    detector = build(config.model, len(train.classes), pretrained=None)
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    history = {"t0": [{"epoch": 1, "val_map": 0.0, "val_map_50": 0.0, "time_limit_hit": True}],
               "t1": [{"epoch": 1, "val_map": -1.0, "val_map_50": 0.0}]}
    rows = [leaderboard_row("t0", config.to_dict(), history["t0"], 5.0, TrialStatus.COMPLETED, "time limit"),
            leaderboard_row("t1", config.to_dict(), history["t1"], 5.0, TrialStatus.EARLY_STOPPED)]
    board = sort_leaderboard(rows)
    metrics = {"map": 0.0, "map_50": 0.0, "trial_id": "t0"}

    # Too little time left: nothing changes.
    same, same_metrics = continue_best(detector, config, train, val, board, history, metrics,
                                       Budget.from_seconds(5), 100, False, 0.0)
    assert same is board and same_metrics is metrics

    board, metrics = continue_best(detector, config, train, val, board, history, metrics,
                                   Budget.from_seconds(40), 100, False, 0.0)
    row = board[board["trial_id"] == "t0"].iloc[0]
    assert row["detail"].endswith("continued with the time left") and 1 < row["epochs"] <= config.epochs
    assert [r["epoch"] for r in history["t0"]] == list(range(1, row["epochs"] + 1))  # epochs numbered on
    assert row["seconds"] > 5.0 and board.iloc[0]["trial_id"] == "t0"
    new_best = max((r["val_map"], r["val_map_50"]) for r in history["t0"][1:])
    improved = new_best > (0.0, 0.0)
    assert metrics["map"] == pytest.approx(max(new_best[0], 0.0)) and row["val_map"] == pytest.approx(metrics["map"])
    changed = any(not torch.equal(before[k], v) for k, v in detector.state_dict().items())
    assert changed == improved  # the detector takes the continued weights only when they validate better


def test_optuna_searcher_runs_the_default_first_then_its_own_samples(data, tmp_path):
    pytest.importorskip("optuna")
    train, val = data
    detector = da.fit(train, val, time_limit=120, num_trials=2, searcher="optuna", seed=3, cpus_per_trial=1,
                      hyperparameters={**FIXED, "epochs": 2}, output_dir=tmp_path, progress=False)
    board = detector.leaderboard()
    assert len(board) == 2 and not board["status"].isin(["failed", "diverged"]).any()
    default = preset_config("medium_quality", gpu=False)  # tried first, as with the random searcher
    tried = sorted(zip(board["lr"], board["augment"]))
    assert (default.lr, default.augment) in tried
    assert len(set(tried)) == 2  # the other configuration is Optuna's own sample
    assert detector.metrics["trial_id"] == board.iloc[0]["trial_id"]


def test_trials_stop_early_only_when_others_wait_for_their_slot():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from detect_automl.tune.scheduler import make_scheduler

    assert isinstance(make_scheduler(20, 2, 100.0, queued=True), ASHAScheduler)
    assert isinstance(make_scheduler(20, 2, None, queued=True), ASHAScheduler)
    # Every trial already has a slot: stopping one would leave its core or GPU idle.
    assert type(make_scheduler(20, 2, 100.0, queued=False)) is FIFOScheduler


class _Trial:
    def __init__(self, trial_id, config):
        self.trial_id, self.config = trial_id, config


def test_asha_never_stops_the_preset_default_early_but_measures_the_others_against_it():
    from ray.tune.schedulers import TrialScheduler

    from detect_automl.tune.scheduler import make_scheduler

    default = {"lr": 1e-3, "augment": 0.5}
    scheduler = make_scheduler(20, 2, 100.0, queued=True, protected=default)
    scheduler.set_search_properties("val_map", "max")
    first, second, default_trial = _Trial("a", {"lr": 2e-3, "augment": 0.1}), \
        _Trial("b", {"lr": 5e-4, "augment": 0.3}), _Trial("c", dict(default))
    for trial in (first, second, default_trial):
        scheduler.on_trial_add(None, trial)

    def at_first_rung(trial, val_map):  # rungs at 25, 50 and 100 s of a 100 s share
        return scheduler.on_trial_result(None, trial, {"time_total_s": 26.0, "val_map": val_map})

    assert at_first_rung(first, 0.02) == TrialScheduler.CONTINUE  # nothing to compare with yet
    assert at_first_rung(second, 0.01) == TrialScheduler.STOP  # below the first: plain ASHA
    assert at_first_rung(default_trial, 0.005) == TrialScheduler.CONTINUE  # as low, but kept
    late = _Trial("d", {"lr": 1e-4, "augment": 0.0})
    scheduler.on_trial_add(None, late)
    # The default's 0.005 is in the rung: the median of 0.02, 0.01, 0.005 is 0.01, so 0.012 goes on
    # (against 0.02 and 0.01 alone the median would be 0.015 and it would stop).
    assert at_first_rung(late, 0.012) == TrialScheduler.CONTINUE
    # At max_t the default stops like any other trial.
    assert scheduler.on_trial_result(None, default_trial, {"time_total_s": 200.0, "val_map": 0.3}) \
        == TrialScheduler.STOP

@pytest.mark.parametrize("gpu_ids, expected", [([], "cpu"), ([3], "cuda")])
def test_a_trial_trains_on_the_device_ray_gave_it(monkeypatch, gpu_ids, expected):
    """gpus_per_trial=0 on a GPU machine: Ray leaves CUDA visible to CPU trials, which must stay off it."""
    import ray

    from detect_automl.tune.trainable import trial_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: gpu_ids)
    assert trial_device().type == expected


def test_data_workers_follow_the_cpus_a_run_has():
    from detect_automl.engine.trial import data_workers

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert data_workers(cuda, 1) == 0  # Colab: 2 vCPUs, two trials at 0.5 GPU each
    assert data_workers(cuda, 3) == 2 and data_workers(cuda, 16) == 4
    assert data_workers(cpu, 16) == 0  # the model already uses every core
    assert preset_config("best_quality", gpu=True).num_workers is None  # derived, not a fixed 4


def test_the_best_trial_continues_only_on_the_kind_of_device_it_trained_on(monkeypatch):
    from detect_automl.tune.leader import continuation_device as _continuation_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only driver of a GPU cluster
    assert _continuation_device(0.5) is None
    assert _continuation_device(0.0) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _continuation_device(1.0) == torch.device("cuda") and _continuation_device(0.0).type == "cpu"


def test_a_search_without_validation_images_fails_before_it_starts(data, tmp_path):
    train, val = data
    with pytest.raises(da.DatasetError, match="validation dataset has no images"):
        da.fit(train, val.subset(0), time_limit=60, num_trials=2, hyperparameters=FIXED, output_dir=tmp_path,
               progress=False)


def test_a_search_the_budget_cannot_carry_trains_the_default_alone_for_the_whole_time(data, tmp_path):
    train, val = data
    hyper = {k: v for k, v in FIXED.items() if k != "epochs"}  # no cap: planned to the time limit
    start = time.time()
    # cpus_per_trial=1: the trials may share the cores (else the plan compares the default's slot
    # with the whole machine first: test_plan.py), so only the budget decides.
    with pytest.warns(UserWarning, match=r"1 of the 3 trials asked run .*time_limit >= \d+ s would run all"):
        detector = da.fit(train, val, time_limit=20, num_trials=3, hyperparameters=hyper, output_dir=tmp_path,
                          cpus_per_trial=1, progress=False)
    elapsed = time.time() - start
    assert 20 * 0.8 < elapsed <= 20 * 1.05, elapsed  # the whole budget trained, no Ray started
    board = detector.leaderboard()
    assert list(board["status"]) == ["completed", "not run", "not run"]
    assert list(board["detail"]) == ["time limit", "budget", "budget"]
    assert board.iloc[0]["epochs"] > 1 and pd.isna(board.iloc[0]["max_epochs"])
    assert detector.config.lr == preset_config("medium_quality", gpu=False).lr  # the preset's default


def test_tune_keeps_the_checkpoint_of_the_engines_best_epoch_when_map_ties(tmp_path):
    """Epoch 2 ties epoch 1 on mAP and loses on mAP@50: the engine's best is epoch 1, which Tune,
    keeping the later of equal scores, dropped when it ranked by val_map alone. Tune's keeper and
    the private pick among what it kept are driven directly: a real search leaves ties to chance."""
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager  # Tune's own keeper, as trials use it
    from ray.train._internal.session import _TrainingResult

    from detect_automl.tune.search import _best_checkpoint
    from detect_automl.tune.trainable import CHECKPOINT_SCORE, checkpoint_score

    manager = _CheckpointManager(CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=CHECKPOINT_SCORE,
                                                  checkpoint_score_order="max"))
    epochs = [(0.1, 0.3, True), (0.1, 0.2, False), (0.05, 0.9, False)]  # (val_map, val_map_50, is_best)
    for epoch, (val_map, val_map_50, is_best) in enumerate(epochs, start=1):
        (tmp_path / str(epoch)).mkdir()
        record = {"epoch": epoch, "val_map": val_map, "val_map_50": val_map_50, "is_best": is_best}
        metrics = {**record, CHECKPOINT_SCORE: checkpoint_score(record)}
        manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(str(tmp_path / str(epoch))), metrics))
    kept = [(r.checkpoint, r.metrics) for r in manager.best_checkpoint_results]
    assert [m["epoch"] for _, m in kept] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "3"]  # the best, and the latest for a resume
    assert _best_checkpoint(kept).path == str(tmp_path / "1")
