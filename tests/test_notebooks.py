"""The notebooks in notebooks/ run top to bottom (nbclient, a real Jupyter kernel) on CPU, tiny sizes.

Each notebook reads ``DETECT_AUTOML_SMOKE=1`` and switches to a tiny sample and time limit; the
paths it would fetch on Colab are given through environment variables instead, so nothing here
touches the network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["quickstart.ipynb", "custom_coco.ipynb", "inference.ipynb"]


def _run(name: str, workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


def _text(notebook: nbformat.NotebookNode) -> str:
    """Every stream and text/plain output of the executed notebook, concatenated."""
    parts = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert "colab.research.google.com" in notebook.cells[0].source  # the Colab badge


@pytest.fixture
def smoke_env(monkeypatch, datasets_dir):
    monkeypatch.setenv("DETECT_AUTOML_SMOKE", "1")
    monkeypatch.setenv("DETECT_AUTOML_COCO", str(datasets_dir / "fruits_nuts"))
    monkeypatch.setenv("DETECT_AUTOML_RACCOON", str(datasets_dir / "raccoon"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.mark.slow
def test_quickstart(smoke_env, shared_data, tmp_path):
    # The fruit set already prepared where download_dataset looks: it verifies it and does not download.
    shutil.copytree(shared_data / "fruit", tmp_path / "data" / "fruit")
    notebook = _run("quickstart.ipynb", tmp_path)
    text = _text(notebook)
    assert "test mAP" in text and "ObjectDetector(" in text
    assert list((tmp_path / "runs" / "fruit" / "logs" / "tensorboard").glob("*/events.out.tfevents.*"))  # loggers=
    assert "'banana': None" not in text and "'orange': None" not in text  # the CI test sample has every class
    assert (tmp_path / "fruit_model" / "model.pt").is_file()
    assert (tmp_path / "runs" / "fruit" / "model" / "leaderboard.csv").is_file()


@pytest.mark.slow
def test_custom_coco(smoke_env, tmp_path):
    notebook = _run("custom_coco.ipynb", tmp_path)
    text = _text(notebook)
    for name in ("date", "fig", "hazelnut"):
        assert name in text  # classes and the per-class AP table
    assert (tmp_path / "fruits_nuts_model" / "config.json").is_file()


@pytest.mark.slow
def test_inference(smoke_env, tmp_path):
    notebook = _run("inference.ipynb", tmp_path)
    assert (tmp_path / "raccoon_model" / "model.pt").is_file()  # trained first: no model was given
    assert (tmp_path / "raccoon.torchscript.pt").is_file() and (tmp_path / "raccoon.onnx").is_file()
    text = _text(notebook)
    assert "Detections(" in text and "onnxruntime:" in text
