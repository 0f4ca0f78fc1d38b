"""Problems found in a dataset: one typed entry each, either collected in a list or raised."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NoReturn

from ..errors import DatasetError

__all__ = ["Problem", "SEVERITIES", "DROPS"]

SEVERITIES = ("error", "fixed", "warning", "info")
"""``error``: the item cannot be used (it is left out, or the call raises, as ``on_error`` says;
see :mod:`detect_automl.data.policy`). ``fixed``: corrected automatically on load. ``warning``:
kept as is, worth a look. ``info``: harmless."""

DROPS = ("image", "box", "")
"""What leaving out an error's item costs: an ``image`` (with its boxes), one ``box``, or
nothing counted ("": a category or other entry, or a problem that is not an error)."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset.

    Attributes:
        severity: one of :data:`SEVERITIES`.
        code: the kind of problem, e.g. ``"image_truncated"`` (the README lists them all).
        file: the file it is in: the annotation file, or the image file for image problems.
        message: what is wrong, naming the item inside the file (object, annotation id, box).
        record: the image id concerned ("" when the problem is not about one image).
        action: what is done about it: what skipping an error leaves out (e.g.
            ``"image dropped"``), the fix for a fixed problem, "" otherwise.
        drops: what skipping an error costs, as a value (one of :data:`DROPS`): the bad-data
            policy counts these.
    """

    severity: str
    code: str
    file: str
    message: str
    record: str = ""
    action: str = ""
    drops: str = ""

    @property
    def text(self) -> str:
        """``"<file>: <message>"``: the problem without the action."""
        return f"{self.file}: {self.message}"

    def __str__(self) -> str:
        return self.text + (f" [{self.action}]" if self.action else "")

    def to_dict(self) -> dict[str, str]:
        """The fields as a JSON-friendly dict."""
        return asdict(self)


class Invalid(Exception):
    """Internal: one item of a file is invalid; the reader records it (or raises a DatasetError)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def report_error(
    problems: list[Problem] | None, code: str, file: str | Path, message: str, record: str = "", action: str = "",
    drops: str = "",
) -> None:
    """Append an error to ``problems``, or raise it as a DatasetError when ``problems`` is None."""
    problem = Problem("error", code, str(file), message, record, action, drops)
    if problems is None:
        raise_problem(problem)
    problems.append(problem)


def raise_problem(problem: Problem) -> NoReturn:
    """Raise one problem as a DatasetError (its text, without an action: nothing was skipped)."""
    problem = replace(problem, action="", drops="")
    raise DatasetError(problem.text, problems=[problem])


def drop_list(problems: Iterable[Problem]) -> str:
    """One indented line per problem: its code, file, message and what was done about it."""
    return "\n".join(f"  {p.code}: {p}" for p in problems)
