"""Shared fixtures: where the repository, its embedded datasets and the optional shared data are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def datasets_dir(repo_root: Path) -> Path:
    """The small real datasets embedded in the repository (raccoon, bccd, fruits_nuts)."""
    return repo_root / "datasets"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository (the fruit set lives only there); skips if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not available at {SHARED_DATA}")
    return SHARED_DATA


def _assert_same_records(got, expected, *, same_path_names: bool = True) -> None:
    """Records match exactly: ids, boxes, labels, flags, areas (NaN: the box area), sizes (and image file names)."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.image_id == b.image_id
        assert (a.width, a.height) == (b.width, b.height)
        assert a.boxes.dtype == b.boxes.dtype == np.float32
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.difficult, b.difficult)
        np.testing.assert_array_equal(a.iscrowd, b.iscrowd)
        np.testing.assert_array_equal(a.object_area, b.object_area)
        if same_path_names:
            assert a.path.name == b.path.name
            assert a.path.read_bytes() == b.path.read_bytes()


@pytest.fixture(scope="session")
def assert_same_records():
    """A function ``(got, expected)`` asserting two record lists are identical."""
    return _assert_same_records
