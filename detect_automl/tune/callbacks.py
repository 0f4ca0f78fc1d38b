"""Ray Tune's own logger callbacks, writing a search's trials to the layout of :mod:`detect_automl.loggers`.

Tune's TensorBoard and CSV callbacks write into each trial's directory (next to its
checkpoints); these subclasses change only that directory, to ``logs/tensorboard/<trial_id>`` and
``logs/csv/<trial_id>/progress.csv``, so a search and a run in this process are watched the same
way. (Tune then adds no TensorBoard or CSV logger of its own; its JSON log, which Tune's results
are read from, stays in the trial directory.) MLflow's callback logs each trial as a run of the
"detect_automl" experiment with the fixed configuration beside the searched values.
"""

from __future__ import annotations

from pathlib import Path

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import CSVLoggerCallback, TBXLoggerCallback

from ..loggers import MLFLOW_EXPERIMENT, csv_file, mlflow_experiment, tensorboard_dir

__all__ = ["tune_callbacks"]


def tune_callbacks(names: tuple[str, ...], logs: Path, fixed: dict) -> list:
    """Ray Tune callbacks for the checked logger ``names`` writing under ``logs``; ``fixed`` is the
    configuration every trial shares (MLflow logs it beside each trial's searched values)."""
    logs = Path(logs).resolve()
    made = {"tensorboard": lambda: _TensorBoard(logs), "csv": lambda: _Csv(logs),
            "mlflow": lambda: _MLflow(mlflow_experiment(logs)[0], fixed)}
    return [made[name]() for name in names]


class _UnderLogs:
    """A Tune logger callback that writes under ``logs`` instead of each trial's directory."""

    def __init__(self, logs: Path) -> None:
        super().__init__()
        self._logs = logs


class _TensorBoard(_UnderLogs, TBXLoggerCallback):
    """Tune's TensorBoard callback, one run per trial under ``logs/tensorboard/<trial_id>``."""

    def log_trial_start(self, trial) -> None:
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        self._trial_writer[trial] = self._summary_writer_cls(str(tensorboard_dir(self._logs, trial.trial_id)),
                                                             flush_secs=30)
        self._trial_result[trial] = {}


class _Csv(_UnderLogs, CSVLoggerCallback):
    """Tune's CSV callback, one ``progress.csv`` per trial under ``logs/csv/<trial_id>`` (appended
    to when a resumed trial goes on)."""

    def _setup_trial(self, trial) -> None:
        if trial in self._trial_files:
            self._trial_files[trial].close()
        path = csv_file(self._logs, trial.trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._trial_continue[trial] = path.exists() and path.stat().st_size > 0
        self._trial_files[trial] = path.open("at")
        self._trial_csv[trial] = None


class _MLflow(MLflowLoggerCallback):
    """Tune's MLflow callback (a run per trial, named after it, in the "detect_automl" experiment,
    created first by :func:`~detect_automl.loggers.mlflow_experiment` so its artifacts go under
    ``logs/mlflow``); each run also gets the fixed configuration as params."""

    def __init__(self, tracking_uri: str, fixed: dict) -> None:
        super().__init__(tracking_uri=tracking_uri, experiment_name=MLFLOW_EXPERIMENT)
        self._fixed = dict(fixed)

    def log_trial_start(self, trial) -> None:
        super().log_trial_start(trial)
        shared = {k: v for k, v in self._fixed.items() if k not in trial.config}
        self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=shared)
