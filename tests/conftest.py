"""Shared fixtures: where the repository, its embedded datasets and the optional shared data are."""

from __future__ import annotations

import shutil
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


def _copy_voc(src: Path, dst: Path, ids: list[str]) -> Path:
    """A VOC copy of a few real annotation/image pairs (every id in ImageSets/Main/all.txt)."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (dst / sub).mkdir(parents=True)
    for i in ids:
        shutil.copy(src / "Annotations" / f"{i}.xml", dst / "Annotations")
        shutil.copy(src / "JPEGImages" / f"{i}.jpg", dst / "JPEGImages")
    (dst / "ImageSets" / "Main" / "all.txt").write_text("".join(f"{i}\n" for i in ids))
    return dst


def _truncate(path: Path) -> None:
    """Cut a file to its first half (a JPEG or PNG that ends early)."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture(scope="session")
def copy_voc():
    """A function ``(src root, dst root, ids)`` copying those real VOC pairs; returns ``dst``."""
    return _copy_voc


@pytest.fixture(scope="session")
def truncate():
    """A function ``(path)`` cutting a copied file to its first half."""
    return _truncate


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: on 2 shared cores, 2 threads slow down badly when another job runs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar in the TensorBoard event files under ``folder``: {tag: {step: value}}.

    The TFRecord framing (length, its CRC, the event, its CRC) is read here and each event
    parsed with tensorboardX's protobuf (the ``tensorboard`` package need not be installed).
    """
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, dict[int, float]] = {}
    for file in sorted(Path(folder).rglob("events.out.tfevents.*")):
        data, at = file.read_bytes(), 0
        while at + 12 <= len(data):
            length = int.from_bytes(data[at:at + 8], "little")
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


@pytest.fixture(scope="session")
def tensorboard_scalars():
    """A function ``(folder) -> {tag: {step: value}}`` reading TensorBoard event files back."""
    return _tensorboard_scalars
