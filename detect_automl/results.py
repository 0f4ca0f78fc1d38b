"""Detections: what ``ObjectDetector.predict`` returns for one image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

__all__ = ["Detections"]


@dataclass
class Detections:
    """Detections in one image, sorted by score (highest first).

    Unpacks as ``class_ids, scores, boxes = detections``.

    Attributes:
        class_ids: int64 (N,) 0-based indexes into ``class_names``.
        scores: float32 (N,) confidence in [0, 1].
        boxes: float32 (N, 4) xyxy pixels in the original image.
        class_names: the model's class names (all of them, indexed by ``class_ids``).
    """

    class_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        order = np.argsort(-np.asarray(self.scores, dtype=np.float32), kind="stable")
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)[order]
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)[order]
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)[order]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.class_ids, self.scores, self.boxes))

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def labels(self) -> list[str]:
        """Class name of each detection."""
        return [self.class_names[i] for i in self.class_ids]

    def to_dict(self) -> dict:
        """JSON-serialisable form: a list of {class_id, class_name, score, box}."""
        return {"detections": [
            {"class_id": int(c), "class_name": self.class_names[c], "score": float(s),
             "box": [float(v) for v in b]}
            for c, s, b in zip(self.class_ids, self.scores, self.boxes)
        ]}

    def __repr__(self) -> str:
        shown = ", ".join(f"{n} {s:.2f}" for n, s in zip(self.labels[:5], self.scores[:5]))
        return f"Detections({len(self)}: {shown}{', ...' if len(self) > 5 else ''})"
