"""Runs you can watch: per-epoch metrics and each trial's configuration for TensorBoard, MLflow and CSV.

``fit(..., loggers=[...])`` writes under ``output_dir/logs``, one layout for a run in this process
and for a Ray Tune search (whose own callbacks, in :mod:`detect_automl.tune.callbacks`, write the
same files)::

    logs/tensorboard/<trial_id>/events.out.tfevents.*   scalars per epoch, the config as hparams
    logs/csv/<trial_id>/progress.csv                    one row per epoch
    logs/mlflow/mlflow.db                               MLflow store (sqlite), experiment "detect_automl",
                                                        one run per trial: the config as params

``<trial_id>`` is the leaderboard's ``trial_id`` ("0" for a run in this process). With
``MLFLOW_TRACKING_URI`` set, MLflow logs there instead (a tracking server, say).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Iterable

from .errors import InputError

__all__ = ["LOGGERS", "LOGS", "EPOCH_METRICS", "MLFLOW_EXPERIMENT", "RunLogger", "check_loggers", "csv_file",
           "mlflow_experiment", "tensorboard_dir"]

LOGGERS = ("tensorboard", "csv", "mlflow")
"""The names ``fit(loggers=...)`` accepts."""
LOGS = "logs"
"""The logs folder inside ``fit``'s ``output_dir``."""
EPOCH_METRICS = ("loss", "lr", "val_map", "val_map_50", "val_map_75", "train_seconds", "val_seconds")
"""The numbers logged per epoch (those an epoch has: validation metrics only on validated epochs)."""
MLFLOW_EXPERIMENT = "detect_automl"

_PACKAGES = {"tensorboard": ("tensorboardX",), "csv": (), "mlflow": ("mlflow", "sqlalchemy", "alembic")}
_INSTALL = {"tensorboard": "pip install tensorboardX", "mlflow": 'pip install "detect-automl[mlflow]"'}
_CSV_COLUMNS = ("epoch", *EPOCH_METRICS, "batch_size", "time_limit_hit", "converged", "timestamp")


def check_loggers(names: str | Iterable[str] | None) -> tuple[str, ...]:
    """The logger names, checked: each known and its package installed (a name alone is one logger).

    Raises:
        InputError: an unknown name (the message lists the valid ones) or a missing package (it
            gives the pip command).
    """
    names = (names,) if isinstance(names, str) else tuple(names or ())
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise InputError(f"unknown logger(s) {', '.join(map(repr, unknown))}: choose from {', '.join(LOGGERS)}")
    for name in names:
        missing = [p for p in _PACKAGES[name] if importlib.util.find_spec(p) is None]
        if missing:
            raise InputError(f"the {name} logger needs {', '.join(missing)}: {_INSTALL[name]}")
    return tuple(dict.fromkeys(names))


def tensorboard_dir(logs: Path, trial_id: str) -> Path:
    """Where a trial's TensorBoard event files go."""
    return Path(logs) / "tensorboard" / str(trial_id)


def csv_file(logs: Path, trial_id: str) -> Path:
    """A trial's CSV of epochs."""
    return Path(logs) / "csv" / str(trial_id) / "progress.csv"


def mlflow_experiment(logs: Path) -> tuple[str, str]:
    """The MLflow tracking URI (``MLFLOW_TRACKING_URI``, else the sqlite store in ``logs/mlflow``)
    and the id of the "detect_automl" experiment there, created with its artifacts under
    ``logs/mlflow/artifacts`` when new."""
    from mlflow.tracking import MlflowClient

    root = (Path(logs) / "mlflow").resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        root.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    if found is not None:
        return uri, found.experiment_id
    return uri, client.create_experiment(MLFLOW_EXPERIMENT, artifact_location=(root / "artifacts").as_uri())


def _numbers(record: dict) -> dict[str, float]:
    """The record's :data:`EPOCH_METRICS` that it has, as floats."""
    return {k: float(record[k]) for k in EPOCH_METRICS if record.get(k) is not None}


def _param(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class RunLogger:
    """The writers of one run in this process, fed each epoch's record by the engine's ``on_epoch``.

    Args:
        names: checked logger names (:func:`check_loggers`).
        logs: the logs folder (``output_dir/logs``).
        trial_id: the run's leaderboard ``trial_id``.
        config: the run's configuration (``TrainConfig.to_dict()``): MLflow params, TensorBoard hparams.

    >>> with RunLogger(["csv"], Path("runs/x/logs"), "0", {"lr": 1e-3}) as run:  # doctest: +SKIP
    ...     run.log_epoch({"epoch": 1, "loss": 2.3, "lr": 1e-3})
    """

    def __init__(self, names: Iterable[str], logs: Path, trial_id: str, config: dict) -> None:
        self.names, self.logs, self.trial_id, self.config = tuple(names), Path(logs), str(trial_id), dict(config)
        self._best: dict[str, float] = {}
        self._tensorboard = self._csv = self._csv_file = self._mlflow = None
        if "tensorboard" in self.names:
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(str(tensorboard_dir(self.logs, self.trial_id)), flush_secs=30)
        if "csv" in self.names:
            path = csv_file(self.logs, self.trial_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._csv_file = path.open("w", newline="")
            self._csv = csv.DictWriter(self._csv_file, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
            self._csv.writeheader()
        if "mlflow" in self.names:
            self._start_mlflow()

    def _start_mlflow(self) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri, experiment = mlflow_experiment(self.logs)
        client = MlflowClient(tracking_uri=uri)
        run = client.create_run(experiment, run_name=self.trial_id, tags={"trial_id": self.trial_id})
        client.log_batch(run.info.run_id, params=[Param(k, _param(v)) for k, v in sorted(self.config.items())])
        self._mlflow = (client, run.info.run_id)

    def log_epoch(self, record: dict) -> None:
        """Log one epoch's record (``train``'s: epoch, loss, lr, val_map, ...)."""
        step, numbers = int(record["epoch"]), _numbers(record)
        if record.get("is_best"):  # the engine's best epoch: the one the leaderboard reports
            self._best = {k: numbers[k] for k in ("val_map", "val_map_50") if k in numbers}
        if self._tensorboard is not None:
            for key, value in numbers.items():
                self._tensorboard.add_scalar(key, value, global_step=step)
            self._tensorboard.flush()
        if self._csv is not None:
            self._csv.writerow({**record, "timestamp": round(time.time(), 3)})
            self._csv_file.flush()
        if self._mlflow is not None:
            from mlflow.entities import Metric

            client, run_id = self._mlflow
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in numbers.items()])

    def close(self, failed: bool = False) -> None:
        """Finish the run: TensorBoard gets the config as hparams, MLflow the run's status."""
        if self._tensorboard is not None:
            self._write_hparams()
            self._tensorboard.close()
            self._tensorboard = None
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = self._csv = None
        if self._mlflow is not None:
            client, run_id = self._mlflow
            client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
            self._mlflow = None

    def _write_hparams(self) -> None:
        """The config beside the run's scalars, as Ray Tune's TensorBoard callback writes it."""
        from tensorboardX.summary import hparams

        values = {k: v if isinstance(v, (bool, int, float, str)) else _param(v) for k, v in self.config.items()
                  if v is not None}
        # The metrics name scalars of this run: TensorBoard's HParams tab shows their last values.
        for summary in hparams(values, dict(self._best)):
            self._tensorboard.file_writer.add_summary(summary)

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, kind, error, trace) -> None:
        self.close(failed=error is not None)
