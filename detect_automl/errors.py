"""Typed errors: every failure detect_automl reports on purpose is a DetectAutoMLError."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "DetectAutoMLError",
    "DatasetError",
    "ModelError",
    "WeightsError",
    "TrainingError",
    "SearchError",
    "InputError",
]


class DetectAutoMLError(Exception):
    """Base class of every error raised deliberately by detect_automl."""


class DatasetError(DetectAutoMLError, ValueError):
    """A dataset file or record is missing, malformed or inconsistent (the message names it).

    Attributes:
        problems: the :class:`~detect_automl.data.problems.Problem` entries behind the error,
            when known (each with a file, a code and a message); else empty.
    """

    def __init__(self, message: str = "", problems: Iterable[Any] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class ModelError(DetectAutoMLError):
    """A model cannot be built, saved or loaded (unknown name, bad or foreign file, ...)."""


class WeightsError(ModelError):
    """Pretrained weights cannot be had (offline, missing file, wrong architecture)."""


class TrainingError(DetectAutoMLError):
    """Training cannot go on (e.g. the loss diverged to NaN/inf)."""


class SearchError(DetectAutoMLError):
    """The hyperparameter search cannot run or every trial failed."""


class InputError(DetectAutoMLError, ValueError):
    """An argument given to a public function is invalid (bad image, path, shape or option)."""
