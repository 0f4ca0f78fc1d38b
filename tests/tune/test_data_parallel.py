"""Data-parallel trials on CPU: two gloo workers through Ray Train, on real raccoon images."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from detect_automl.budget import Budget
from detect_automl.config import TrainConfig
from detect_automl.errors import InputError
from detect_automl.tune.plan import trial_workers

FIXED = {"pretrained": None, "batch_size": 2, "epochs": 3, "warmup_steps": 2, "model": "ssdlite320_mobilenet_v3_large"}


def test_workers_per_trial_defaults_to_one_per_whole_gpu_and_splits_the_trial():
    assert trial_workers(None, 4, None) == (4, 4, None)  # a 4-GPU trial no longer idles 3 GPUs
    assert trial_workers(None, 0.5, None) == (1, 0.5, None)
    assert trial_workers(None, None, 3) == (1, None, 3)
    assert trial_workers(2, 0, None) == (2, 0, 2.0)  # one CPU per worker by default
    assert trial_workers(2, 0, 4) == (2, 0, 4)
    assert trial_workers(2, 4, None) == (2, 4, None)
    with pytest.raises(InputError, match="whole GPU"):
        trial_workers(2, 1, None)  # two NCCL ranks cannot share one GPU
    with pytest.raises(InputError, match="whole number >= 1"):
        trial_workers(0, None, None)


_V1_DRIVER = """
import sys, detect_automl as da
data, out = sys.argv[1:]
train, val = da.Dataset(data, split="train").subset(4), da.Dataset(data, split="val").subset(2)
da.fit(train, val, time_limit=60, workers_per_trial=2, output_dir=out, progress=False,
       hyperparameters={"pretrained": None, "batch_size": 2, "epochs": 1})
"""


def test_data_parallel_trials_on_ray_train_v1_say_what_to_change(datasets_dir, tmp_path):
    # Its own process: Ray picks Train V1 or V2 when ray.train is first imported.
    env = {**os.environ, "RAY_TRAIN_V2_ENABLED": "0"}  # Ray Train's deprecated V1, as before Ray 2.51
    driver = subprocess.run([sys.executable, "-c", _V1_DRIVER, str(datasets_dir / "raccoon"), str(tmp_path)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert driver.returncode != 0
    assert "SearchError: workers_per_trial=2 needs Ray Train V2: upgrade ray" in driver.stderr, driver.stderr[-3000:]
    assert "RAY_TRAIN_V2_ENABLED=1" in driver.stderr


def _replica(loop: dict) -> None:
    """A Ray Train worker: run_trial as a trial's worker runs it, recording each epoch's weights."""
    import ray.train

    from detect_automl.engine.trial import run_trial

    seen = []

    def on_epoch(record: dict, state) -> None:
        # Parameters only: BatchNorm's running statistics differ by each replica's last batch until
        # the next forward broadcasts rank 0's (DistributedDataParallel's broadcast_buffers).
        weights = {k: v.detach().cpu().clone() for k, v in state.model.named_parameters()}
        seen.append({"record": record, "weights": weights})

    train, val = loop["data"]
    # Planned by time: each replica's own clock would end the run at another step (and hang the
    # other in its next all-reduce); rank 0's decides for both.
    run_trial(TrainConfig.from_dict(loop["config"]), train, val, device=torch.device("cpu"), on_epoch=on_epoch,
              budget=Budget.from_seconds(loop["seconds"]), progress=False)
    rank = ray.train.get_context().get_world_rank()
    torch.save(seen, f"{loop['out']}/rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_workers_train_identical_replicas_on_halves_of_each_epoch(data, tmp_path):
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    train, val = data
    config = TrainConfig(**{**FIXED, "epochs": None})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        TorchTrainer(_replica, train_loop_config={"config": config.to_dict(), "data": (train, val),
                                                    "out": str(tmp_path), "seconds": 9.0},
                     scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                     run_config=ray.train.RunConfig(storage_path=str(tmp_path / "runs"))).fit()
    finally:
        ray.shutdown()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) >= 3
    for first, second in zip(*ranks):
        assert first["record"] == second["record"]  # rank 0's record and decisions, on both
        assert first["weights"].keys() == second["weights"].keys()
        for name, tensor in first["weights"].items():  # gradients all-reduced: the replicas stay one model
            assert torch.equal(tensor, second["weights"][name]), name
    records = [epoch["record"] for epoch in ranks[0]]
    assert all(r["steps"] == 2 for r in records[:-1])  # 8 images, 4 a replica, batches of 2
    assert all("val_map" in r for r in records)  # rank 0 validated every epoch
    assert records[-1]["time_limit_hit"] and not any(r["time_limit_hit"] for r in records[:-1])
    assert records[-1]["lr"] < 0.1 * max(r["lr"] for r in records)  # annealed to its deadline
    assert records[-1]["loss"] < 0.8 * records[0]["loss"]  # it learns


# fit(workers_per_trial=2) end to end, one worker on each node of a cluster: tests/tune/test_cluster.py.
