"""Fixtures shared by the search tests."""

from __future__ import annotations

import pytest

import detect_automl as da


@pytest.fixture(scope="module")
def data(datasets_dir):
    """8 raccoon training images and 3 validation images: real data, seconds a trial on CPU."""
    return (da.Dataset(datasets_dir / "raccoon", split="train").subset(8),
            da.Dataset(datasets_dir / "raccoon", split="val").subset(3))
