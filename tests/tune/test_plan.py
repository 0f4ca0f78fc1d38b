"""The search plan, the Budget value and the portfolio: what a search runs, where and for how long."""

from __future__ import annotations

import json
import time

import pytest
import torch

import detect_automl as da
from detect_automl.budget import Budget, time_limit_holding, wrap_up_seconds
from detect_automl.config import TrainConfig
from detect_automl.tune.plan import (
    Hardware,
    Probe,
    gpu_share,
    make_plan,
    probe,
    trial_resources,
    trial_step_seconds,
)
from detect_automl.tune.portfolio import PORTFOLIO_FILE, portfolio, search_points
from detect_automl.tune.space import list_presets, preset_config, preset_space


def test_budget_is_a_wall_clock_deadline_with_a_monotonic_view():
    budget = Budget.from_seconds(100)
    assert 99 < budget.remaining() <= 100 and not budget.expired(50)
    assert budget.minus(30).remaining() == pytest.approx(budget.remaining() - 30, abs=0.01)
    assert budget.share(10).remaining() == pytest.approx(10, abs=0.01)
    assert budget.share(1000) == budget and budget.share(None) == budget  # never past the budget
    assert budget.monotonic() - time.monotonic() == pytest.approx(budget.remaining(), abs=0.01)
    assert Budget.from_seconds(-1).expired()


def test_a_budget_that_cannot_carry_the_trials_runs_the_default_alone_and_says_what_would():
    # 2 one-CPU slots, 0.4 s a step: 600 s carry the default plus (600 - 10) / (1500 * 0.44) = 0 others.
    plan = make_plan(4, 600, 2, 1.0, 0.0, 0.4, floor_steps=1500)
    assert (plan.num_run, plan.not_run, plan.concurrency) == (1, 3, 1)
    assert "not run (budget): 3" in plan.describe() and "1500 steps" in plan.describe()
    # The time_limit the plan names does run all of them.
    enough = make_plan(4, plan.needed_seconds, 2, 1.0, 0.0, 0.4, floor_steps=1500)
    assert enough.num_run == 4 and enough.not_run == 0 and enough.needed_seconds is None


def test_the_default_keeps_its_slot_for_the_whole_search_and_the_others_share_the_rest():
    plan = make_plan(5, 1000, 2, 1.0, 0.0, 0.1, floor_steps=1000)  # others: 990 s / 110 s = 9 fit; 4 asked
    assert plan.num_run == 5 and plan.concurrency == 2
    assert plan.default_seconds == pytest.approx(990)
    assert plan.trial_seconds == pytest.approx(990 / 4) and plan.trial_steps == 2250
    # Four slots and three others: each other trial has a slot of its own for the whole time.
    wide = make_plan(4, 1000, 4, 1.0, 0.0, 0.1, floor_steps=1000)
    assert wide.trial_seconds == pytest.approx(990) and wide.concurrency == 4
    # One slot: the default keeps at least half the time, the others follow it.
    single = make_plan(3, 1000, 1, 2.0, 0.0, 0.1, floor_steps=1000)
    assert single.num_run == 3 and single.default_seconds >= 990 / 2 and single.concurrency == 1
    assert single.default_seconds + 2 * single.trial_seconds == pytest.approx(990)  # one after another
    # Not probed (a grid, a resumed search): every trial runs, with an equal share of the slots' time.
    grid = make_plan(6, 1000, 2, 1.0, 0.0, None)
    assert grid.num_run == 6 and grid.trial_seconds == grid.default_seconds == pytest.approx(990 * 2 / 6)


def test_capped_trials_need_only_their_epochs_and_no_budget_runs_everything():
    starved = make_plan(3, 120, 2, 1.0, 0.0, 0.5, floor_steps=1500)
    capped = make_plan(3, 120, 2, 1.0, 0.0, 0.5, floor_steps=1500, max_steps=20)  # epochs=10, 2 steps each
    assert starved.num_run == 1 and capped.num_run == 3
    unplanned = make_plan(6, None, 2, 1.0, 0.0, None)
    assert unplanned.num_run == 6 and unplanned.trial_seconds is None and unplanned.concurrency == 2
    assert make_plan(1, 100, 2, 1.0, 0.0, 0.5).num_run == 1


def test_resources_and_step_time_per_trial():
    cpu_box = Hardware(cpus=2, gpus=0)
    assert trial_resources(cpu_box, None, None, trials=2) == (1.0, 0.0, 2)
    assert trial_resources(cpu_box, None, None) == (2.0, 0.0, 1)  # one trial: the whole machine
    assert trial_resources(cpu_box, None, 2) == (2.0, 0.0, 1)
    # One CPU machine's cores split evenly over the trials asked, so none sits idle; a cluster's
    # nodes may differ in size, so there each trial takes 1.
    eight = Hardware(cpus=8, gpus=0)
    assert trial_resources(eight, None, None, trials=2) == (4.0, 0.0, 2)
    assert trial_resources(eight, None, None, trials=3) == (2.0, 0.0, 4)
    assert trial_resources(eight, None, None, trials=20) == (1.0, 0.0, 8)
    assert trial_resources(eight, None, 1, trials=2) == (1.0, 0.0, 8)  # the user's choice stands
    assert trial_resources(Hardware(cpus=8, gpus=0, gpus_per_node=(0.0, 0.0)), None, None, trials=2) == (1.0, 0.0, 8)
    gpu_box = Hardware(cpus=16, gpus=1, gpus_per_node=(1.0,), gpu_memory=80 * 2**30)
    assert trial_resources(gpu_box, None, None, gpu_share=0.25) == (4.0, 0.25, 4)
    assert trial_resources(gpu_box, 1, None) == (16.0, 1.0, 1)
    with pytest.raises(da.SearchError, match="gpus_per_trial=1"):
        trial_resources(cpu_box, 1, None)
    # A 4 GB trial on an 80 GB GPU: four per GPU when four or more trials are asked; alone otherwise.
    assert gpu_share(4 * 2**30, 80 * 2**30, 8, 1) == 0.25 and gpu_share(4 * 2**30, 80 * 2**30, 1, 1) == 1.0
    assert gpu_share(30 * 2**30, 80 * 2**30, 8, 1) == 1.0  # too big to share
    measured = Probe(step_seconds=0.2, threads=1)
    assert trial_step_seconds(measured, 0.0) == pytest.approx(0.2)  # a CPU trial: probed on its own threads
    assert trial_step_seconds(measured, 0.25) == pytest.approx(0.8)  # four trials taking turns on a GPU


def test_on_shared_cpus_the_default_trains_alone_unless_its_slot_keeps_its_speed():
    # A budget that carries 3 others (1500 steps of 0.3 s on a 1-CPU slot), but one thread of two
    # runs at 0.15 / 0.3 = half the default's speed alone: the default alone, for the whole time.
    plan = make_plan(4, 3000, 2, 1.0, 0.0, 0.3, floor_steps=1500, alone_step_seconds=0.15)
    assert (plan.num_run, plan.not_run, plan.concurrency, plan.not_run_reason) == (1, 3, 1, "shared CPUs")
    assert plan.default_seconds == pytest.approx(2990) and plan.needed_seconds is None
    text = plan.describe(in_process=True)
    assert "not run (shared CPUs): 3" in text and "0.30 s against 0.15 s" in text and "cpus_per_trial" in text
    # A slot that keeps 95 % of the speed alone (many cores): the search runs as the budget allows.
    wide = make_plan(4, 3000, 2, 1.0, 0.0, 0.3, floor_steps=1500, alone_step_seconds=0.285)
    assert wide.num_run == 4 and wide.not_run_reason == "budget"
    assert make_plan(4, 3000, 2, 1.0, 0.0, 0.3, floor_steps=1500).num_run == 4  # not compared: the budget decides


def test_the_plan_times_a_cpu_trial_on_its_own_threads_and_respects_cpus_per_trial(datasets_dir, tmp_path,
                                                                                   monkeypatch):
    from detect_automl.tune import plan as plan_module
    from detect_automl.tune.plan import SearchRequest, plan_search

    calls = []

    def fake_probe(config, train, device, steps=3, threads=None):
        calls.append(threads)
        return Probe(step_seconds=0.3 if threads == 1 else 0.15, threads=threads or 2)

    monkeypatch.setattr(plan_module, "probe", fake_probe)
    monkeypatch.setattr(plan_module, "_hardware", lambda address: Hardware(cpus=2, gpus=0))
    train = da.Dataset(datasets_dir / "raccoon", split="train")
    base = TrainConfig(pretrained=None, epochs=None)

    def request(cpus_per_trial):
        return SearchRequest(base, {}, [{}], 4, 0, cpus_per_trial, None, "random", 0, False, tmp_path, False)

    plan = plan_search(request(None), train, Budget.from_seconds(3000))
    assert calls == [None, 1]  # the whole machine, then a trial's one thread
    assert (plan.num_run, plan.not_run_reason, plan.alone_step_seconds) == (1, "shared CPUs", 0.15)
    calls.clear()
    chosen = plan_search(request(1), train, Budget.from_seconds(3000))  # the user's choice: share the cores
    assert calls == [None, 1] and chosen.num_run == 4 and chosen.step_seconds == pytest.approx(0.3)
    # 8 cores, 4 trials: 2 threads each, timed; a slot that keeps 95 % of the speed runs the search.
    calls.clear()
    monkeypatch.setattr(plan_module, "probe", lambda config, train, device, steps=3, threads=None: (
        calls.append(threads) or Probe(step_seconds=0.1 if threads is None else 0.105, threads=threads or 8)))
    monkeypatch.setattr(plan_module, "_hardware", lambda address: Hardware(cpus=8, gpus=0))
    wide = plan_search(request(None), train, Budget.from_seconds(3000))
    assert calls == [None, 2] and (wide.num_run, wide.concurrency, wide.cpus_per_trial) == (4, 4, 2.0)


def test_the_probe_runs_on_the_threads_it_is_given_and_gives_them_back(datasets_dir):
    train = da.Dataset(datasets_dir / "raccoon", split="train").subset(4)
    own = torch.get_num_threads()
    measured = probe(TrainConfig(pretrained=None, batch_size=2), train, torch.device("cpu"), steps=1, threads=1)
    assert measured.threads == 1 and torch.get_num_threads() == own


def test_the_probe_times_real_training_steps(datasets_dir):
    train = da.Dataset(datasets_dir / "raccoon", split="train").subset(6)
    measured = probe(TrainConfig(pretrained=None, batch_size=2), train, torch.device("cpu"), steps=2)
    assert 0.01 < measured.step_seconds < 30 and measured.threads == torch.get_num_threads()
    assert measured.seconds >= 2 * measured.step_seconds and measured.peak_gpu_bytes == 0


def test_search_points_run_the_default_then_the_portfolio_the_space_can_express():
    space = {"lr": ("loguniform", 3e-4, 3e-3), "batch_size": [4, 8], "augment": ("uniform", 0.0, 0.8)}
    base = TrainConfig(lr=1e-3, batch_size=4, augment=0.5)
    entries = [{"lr": 2e-3, "augment": 0.25}, {"lr": 1e-2},  # out of range: dropped
               {"batch_size": 8, "warmup_steps": 10},  # warmup_steps is not searched: left to the fixed value
               {"lr": 1e-3}]  # the default again: dropped
    points = search_points(space, base, entries)
    assert points == [{"lr": 1e-3, "batch_size": 4, "augment": 0.5}, {"lr": 2e-3, "batch_size": 4, "augment": 0.25},
                      {"lr": 1e-3, "batch_size": 8, "augment": 0.5}]
    assert search_points({"lr": ("loguniform", 1e-2, 1e-1)}, base, entries) == []  # default outside the space


def test_every_portfolio_entry_is_a_valid_config_that_names_no_dataset():
    text = PORTFOLIO_FILE.read_text().lower()
    for name in ("fruit", "bccd", "raccoon", "nuts", "voc", "coco2017"):
        assert name not in json.dumps(json.loads(text)["portfolios"]), name
    for preset in list_presets():
        for gpu in (False, True):
            for pretrained in (False, True):
                base = preset_config(preset, gpu, pretrained)
                for entry in portfolio(preset, gpu, pretrained):
                    base.replace(**entry)  # known keys, valid values
                points = search_points(preset_space(preset, gpu, pretrained), base, portfolio(preset, gpu, pretrained))
                assert points and len(points) == 1 + len(portfolio(preset, gpu, pretrained)), (preset, gpu, pretrained)


def test_finetuning_presets_follow_the_published_recipes():
    for preset in list_presets():
        for gpu in (False, True):
            scratch, tuned = preset_config(preset, gpu), preset_config(preset, gpu, pretrained=True)
            assert tuned.model == scratch.model and tuned.epochs < scratch.epochs
            assert tuned.lr < scratch.lr or tuned.optimizer != scratch.optimizer
            if tuned.optimizer == "sgd":  # torchvision's references: lr 0.02 for 16 images a step
                assert tuned.lr == pytest.approx(0.02 * tuned.batch_size / 16)


def test_fit_configures_the_regime_the_weights_allow_and_plans_epochs_by_time(monkeypatch):
    """Through fit's configure step (private): fit itself would train for its whole time_limit to show it."""
    from detect_automl import api

    asked = []
    monkeypatch.setattr(api, "resolve_pretrained", lambda value, models: asked.append(models) or "coco")
    base, space, tuning = api._configure("medium_quality", False, {}, {}, 600, 0, False)
    tuned = preset_config("medium_quality", False, pretrained=True)
    assert tuning and (base.pretrained, base.lr, base.epochs) == ("coco", tuned.lr, None)  # planned by time
    assert space["lr"] == ("loguniform", tuned.lr / 4, tuned.lr * 2)
    capped = api._configure("medium_quality", False, {"epochs": 5}, {}, 600, 0, False)[0]
    assert capped.epochs == 5  # the user's epochs are a cap
    assert api._configure("medium_quality", False, {}, {}, None, 0, False)[0].epochs == tuned.epochs  # no time_limit
    # Only the models that can train need weights: the default alone, or every model a search may pick.
    asked.clear()
    api._configure("medium_quality", True, {}, {}, 600, 0, False)
    api._configure("medium_quality", True, {}, {"model": {"grid_search": ["a", "b"]}}, 600, 0, True)
    assert asked == [[preset_config("medium_quality", True).model], ["a", "b"]]
    monkeypatch.setattr(api, "resolve_pretrained", lambda value, models: None)  # offline: from scratch
    scratch, _, tuning = api._configure("medium_quality", False, {"lr": 5e-4}, {"batch_size": [4, 8]}, 600, 0, True)
    assert not tuning and (scratch.pretrained, scratch.lr) == (None, 5e-4)  # the user's values win


def test_the_time_limit_the_warning_names_leaves_the_search_the_seconds_it_needs():
    for needed in (10.0, 507.0, 3007.0, 90_007.0):  # what the search needs + what fit already spent
        limit = time_limit_holding(needed)
        assert limit - wrap_up_seconds(limit, True) >= needed - 1e-6, (needed, limit)
        assert (limit - 1) - wrap_up_seconds(limit - 1, True) < needed  # and no more than that (to the second)
