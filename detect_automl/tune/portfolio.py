"""Ordered portfolios: known-good configurations a search tries right after the preset's default.

The configurations are data (``portfolios.json``), per preset, hardware (cpu, gpu) and regime
(scratch, pretrained), each list with the benchmark and table that chose it. A search runs the
preset's default first, then these in order, then samples of the search space.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

from ..config import TrainConfig
from .space import default_point, in_domain

__all__ = ["PORTFOLIO_FILE", "portfolio", "search_points"]

PORTFOLIO_FILE = Path(__file__).with_name("portfolios.json")


@lru_cache(maxsize=1)
def _load() -> dict:
    return json.loads(PORTFOLIO_FILE.read_text())


def portfolio(preset: str, gpu: bool, pretrained: bool) -> list[dict]:
    """The ordered configurations (partial TrainConfig dicts) for a preset, hardware and regime."""
    key = f"{'gpu' if gpu else 'cpu'}-{'pretrained' if pretrained else 'scratch'}"
    return [dict(entry) for entry in _load()["portfolios"].get(preset, {}).get(key, [])]


def search_points(space: dict, base: TrainConfig, entries: list[dict]) -> list[dict]:
    """The first configurations of a search: the preset's default, then each portfolio entry the
    space can express, complete with the default's values for the searched keys it leaves out.

    An entry's key that is not searched (the user fixed it, or the space lacks it) is left to
    the fixed value; an entry with a value outside the space's range or choices is dropped, as is
    one that repeats an earlier point. Empty when the default itself is not in the space.
    """
    first = default_point(space, base)
    if first is None:
        return []
    points = [first]
    for entry in entries:
        point = dict(first)
        for key, value in entry.items():
            if key not in space:
                continue
            if not in_domain(value, space[key]):
                break
            point[key] = value
        else:
            if not any(_same(point, seen) for seen in points):
                points.append(point)
    return points


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        math.isclose(a[k], b[k]) if isinstance(a[k], float) and isinstance(b[k], float) else a[k] == b[k]
        for k in a)
