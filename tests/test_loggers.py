"""Runs you can watch: fit(loggers=...) writes TensorBoard, CSV and MLflow logs that read back.

The Ray Tune path (Tune's own callbacks, the same layout) is checked inside
tests/tune/test_search.py's first search, which runs anyway.
"""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

import detect_automl as da
from detect_automl import loggers
from detect_automl.errors import InputError

HYPER = {"pretrained": None, "batch_size": 2, "epochs": 2, "warmup_steps": 2}
HAS_MLFLOW = all(importlib.util.find_spec(p) is not None for p in ("mlflow", "sqlalchemy", "alembic"))


def test_logger_names_are_checked_before_anything_runs(datasets_dir, tmp_path, monkeypatch):
    train = da.Dataset(datasets_dir / "raccoon", split="train").subset(2)
    with pytest.raises(InputError, match="unknown logger.*'wandb'.*tensorboard, csv, mlflow"):
        da.fit(train, loggers=["tensorboard", "wandb"], output_dir=tmp_path, progress=False)
    assert loggers.check_loggers("csv") == ("csv",) and loggers.check_loggers(None) == ()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(InputError, match=r'needs mlflow: pip install "detect-automl\[mlflow\]"'):
        da.fit(train, loggers=["mlflow"], output_dir=tmp_path, progress=False)
    assert not (tmp_path / "logs").exists()


def test_a_run_in_process_logs_each_epoch_to_tensorboard_csv_and_mlflow(datasets_dir, tmp_path, monkeypatch,
                                                                          tensorboard_scalars):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train = da.Dataset(datasets_dir / "raccoon", split="train").subset(6)
    val = da.Dataset(datasets_dir / "raccoon", split="val").subset(2)
    names = ["tensorboard", "csv"] + (["mlflow"] if HAS_MLFLOW else [])
    detector = da.fit(train, val, time_limit=15, hyperparameters=HYPER, output_dir=tmp_path, progress=False,
                      loggers=names)
    history = detector.history["0"]
    validated = {r["epoch"]: r for r in history if r.get("val_map") is not None}
    assert validated and detector.leaderboard().iloc[0]["trial_id"] == "0"
    logs = tmp_path / "logs"

    scalars = tensorboard_scalars(logs / "tensorboard" / "0")
    assert set(scalars["loss"]) == {r["epoch"] for r in history}
    assert scalars["lr"] and all(v > 0 for v in scalars["lr"].values())
    for epoch, record in validated.items():
        assert scalars["val_map"][epoch] == pytest.approx(record["val_map"], abs=1e-6)
        assert scalars["val_map_50"][epoch] == pytest.approx(record["val_map_50"], abs=1e-6)

    rows = pd.read_csv(logs / "csv" / "0" / "progress.csv")
    assert list(rows["epoch"]) == [r["epoch"] for r in history]
    assert {"loss", "lr", "val_map", "val_map_50"} <= set(rows.columns)
    assert rows.set_index("epoch").loc[list(validated), "val_map"].tolist() == pytest.approx(
        [r["val_map"] for r in validated.values()], abs=1e-9)

    if not HAS_MLFLOW:
        pytest.skip("mlflow is not installed: the MLflow part is not checked")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(logs / 'mlflow' / 'mlflow.db').resolve()}")
    (run,) = client.search_runs([client.get_experiment_by_name(loggers.MLFLOW_EXPERIMENT).experiment_id])
    assert run.info.run_name == "0" and run.info.status == "FINISHED"
    assert run.data.params["model"] == detector.model_name and float(run.data.params["lr"]) == detector.config.lr
    maps = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_map")}
    assert maps == pytest.approx({e: r["val_map"] for e, r in validated.items()}, abs=1e-9)
    assert len(client.get_metric_history(run.info.run_id, "lr")) == len(history)
