"""The bad-data policy: what ``on_error`` does with the errors reading or checking a dataset finds.

One home for the rule (DESIGN "Bad data policy"), used by ``Dataset(...)`` while reading and by
:func:`~detect_automl.data.checks.check_dataset` before ``fit`` and ``evaluate``:

- ``"auto"`` (the default): leave isolated bad images and boxes out, with a warning that lists
  each; raise when the problem looks systematic (:func:`systematic`: more than
  :data:`MAX_BAD_FRACTION` of the images or of the boxes are bad, or every image is);
- ``"raise"``: raise on any error (strict, for pipelines);
- ``"skip"``: leave out whatever the share.

A file that cannot be read at all (a folder, split file or COCO JSON) raises under every value:
its reader stops before any policy applies. The data on disk is never changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .problems import Problem

if TYPE_CHECKING:
    from .dataset import Dataset

__all__ = ["ON_ERROR", "DEFAULT_ON_ERROR", "MAX_BAD_FRACTION", "check_on_error", "skipped_counts", "systematic",
           "refusal", "skip_summary", "data_report"]

ON_ERROR = ("auto", "raise", "skip")
"""The values of every ``on_error`` argument."""
DEFAULT_ON_ERROR = "auto"
MAX_BAD_FRACTION = 0.10
"""Under ``on_error="auto"``, a share of bad images (or of bad boxes) above this is systematic."""


def check_on_error(on_error: str) -> None:
    """Raise InputError unless ``on_error`` is one of :data:`ON_ERROR`."""
    if on_error not in ON_ERROR:
        raise InputError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def skipped_counts(problems: Iterable[Problem]) -> dict[str, int]:
    """``num_images_skipped`` and ``num_boxes_skipped``: what the errors among ``problems`` leave out."""
    errors = [p for p in problems if p.severity == "error"]
    return {"num_images_skipped": sum(p.drops == "image" for p in errors),
            "num_boxes_skipped": sum(p.drops == "box" for p in errors)}


def systematic(problems: Iterable[Problem], images: int, boxes: int) -> str:
    """Why leaving out the errors among ``problems`` would hide a systematic problem ("" if it would not).

    Args:
        problems: what was found (only errors count).
        images, boxes: how many images and boxes are kept once the errors are left out.

    Returns:
        A sentence naming the share of bad images or boxes when it is over
        :data:`MAX_BAD_FRACTION` or when every image is bad, else "".
    """
    counts = skipped_counts(problems)
    bad_images, bad_boxes = counts["num_images_skipped"], counts["num_boxes_skipped"]
    if bad_images and not images:
        return f"every image is bad ({bad_images} of {bad_images})"
    for bad, kept, what in ((bad_images, images, "images"), (bad_boxes, boxes, "boxes")):
        if bad > MAX_BAD_FRACTION * (bad + kept):
            return (f"{bad} of {bad + kept} {what} ({_percent(bad / (bad + kept))}) are bad, more than the "
                    f"{_percent(MAX_BAD_FRACTION)} that on_error='auto' leaves out: this looks systematic")
    return ""


def _percent(share: float) -> str:
    """``0.15`` -> ``"15 %"``, ``0.105`` -> ``"10.5 %"``."""
    return f"{100 * share:.1f}".removesuffix(".0") + " %"


def refusal(on_error: str, problems: list[Problem], images: int, boxes: int) -> str:
    """Why ``on_error`` stops on the errors among ``problems``, and what to do; "" to leave them out.

    Args:
        on_error: one of :data:`ON_ERROR`.
        problems: the problems to judge (only errors count).
        images, boxes: how many images and boxes are kept once the errors are left out.
    """
    check_on_error(on_error)
    errors = [p for p in problems if p.severity == "error"]
    if not errors or on_error == "skip":
        return ""
    if on_error == "raise":
        return (f"{len(errors)} error(s) in the dataset and on_error='raise'; fix them, or pass on_error='auto' "
                "(the default) to leave out isolated bad images and boxes, or 'skip' to leave out any")
    reason = systematic(errors, images, boxes)
    return reason and f"{reason}; fix the data, or pass on_error='skip' to leave the bad items out anyway"


def skip_summary(dataset: Dataset) -> dict[str, Any]:
    """What a checked dataset keeps and what was left out of it (its ``problems``), JSON-friendly."""
    stats, errors = dataset.stats(), [p for p in dataset.problems if p.severity == "error"]
    return {"source": str(dataset.root) if dataset.root is not None else None, "format": dataset.format,
            "num_images": stats["num_images"], "num_boxes": stats["num_boxes"],
            **skipped_counts(errors), "skipped": [p.to_dict() for p in errors]}


def data_report(on_error: str, train: Dataset, val: Dataset | None) -> dict[str, Any]:
    """The record of what a fit left out of ``train`` and ``val`` (a saved model's ``data_report.json``).

    Args:
        on_error: the policy the data was checked under.
        train, val: the checked datasets, as :func:`~detect_automl.data.checks.check_dataset`
            returned them (their ``problems`` list what was left out, in the order found);
            ``val`` None when validation is held out of ``train``.
    """
    return {"on_error": on_error, "max_bad_fraction": MAX_BAD_FRACTION, "train": skip_summary(train),
            "val": None if val is None else skip_summary(val)}
