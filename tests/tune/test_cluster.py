"""Cluster mode for real: a two-node Ray cluster on this machine, fit(ray_address=...)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import detect_automl as da

RAY = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_processes_mentioning(marker: str) -> None:
    """Stop exactly the Ray processes this test started (their command lines name its temp dirs)."""
    for _ in range(3):
        found = False
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found = True
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not found:
            return
        time.sleep(0.5)


@dataclass
class _Cluster:
    address: str
    worker_dir: str

    def kill_worker_node(self) -> None:
        """The second node dies: its raylet, object store and workers, all at once (SIGKILL)."""
        _kill_processes_mentioning(self.worker_dir)


@pytest.fixture
def two_node_cluster(monkeypatch):
    if not RAY.exists():
        pytest.skip(f"the ray command line is not installed next to {sys.executable}")
    port = _free_port()
    # Short paths: Ray's Unix sockets live under the temp dir and have a length limit.
    head_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    worker_dir = tempfile.mkdtemp(prefix="rw", dir="/tmp")
    # A loopback-only test cluster: no token auth (the nodes and this driver must agree on it;
    # Ray 2.5x+ turns it on when ~/.ray/auth_token exists).
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"]
    try:
        subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                        "--include-dashboard=false", f"--temp-dir={head_dir}", *common],
                       check=True, capture_output=True, timeout=120, env=env)
        subprocess.run([str(RAY), "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
                        f"--temp-dir={worker_dir}", *common],
                       check=True, capture_output=True, timeout=120, env=env)
        yield _Cluster(f"127.0.0.1:{port}", worker_dir)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"could not start a local Ray cluster: {exc.stderr.decode(errors='replace')[-2000:]}")
    finally:
        for directory in (worker_dir, head_dir):
            _kill_processes_mentioning(directory)
        _kill_processes_mentioning(f"127.0.0.1:{port}")
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(worker_dir, ignore_errors=True)


_DRIVER = """
import sys, ray, detect_automl as da
data, address, out = sys.argv[1:]
train = da.Dataset(data, split="train").subset(6)
val = da.Dataset(data, split="val").subset(2)
da.fit(train, val, time_limit=150, num_trials=2, ray_address=address, output_dir=out, progress=False,
       hyperparameters={"pretrained": None, "batch_size": 2, "epochs": 12, "warmup_steps": 1})
assert not ray.is_initialized()  # fit disconnected; the cluster is the fixture's to stop
"""


def _kill_the_second_node_once_reported(script: str, trials: int, cluster, datasets_dir, tmp_path) -> tuple[int, str]:
    """Run ``script``'s fit against ``cluster``; once its ``trials`` trials have each reported an
    epoch, kill the second node. The driver's exit code and output.

    The driver runs in its own process: Ray reads its auth mode once per process, so a local
    search earlier in this test process would otherwise decide how it talks to the cluster.
    """
    driver = subprocess.Popen([sys.executable, "-c", script, str(datasets_dir / "raccoon"), cluster.address,
                               str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and driver.poll() is None:
        results = list(tmp_path.glob("trials/search/*/result.json"))
        if len(results) == trials and all(r.stat().st_size for r in results):
            cluster.kill_worker_node()
            break
        time.sleep(0.2)
    output, _ = driver.communicate(timeout=300)
    return driver.returncode, output


def test_fit_on_a_two_node_cluster_keeps_what_it_has_when_a_node_dies(two_node_cluster, datasets_dir, tmp_path):
    # One trial on each node (one CPU each): once both have reported an epoch, the second node dies.
    returncode, output = _kill_the_second_node_once_reported(_DRIVER, 2, two_node_cluster, datasets_dir, tmp_path)
    assert returncode == 0, output[-5000:]
    loaded = da.ObjectDetector.load(tmp_path / "model")
    board = loaded.leaderboard()
    assert len(board) == 2 and board["node"].nunique() == 2, board[["trial_id", "node"]]  # one trial on each node
    assert sorted(board["status"]) == ["completed", "failed"], board[["trial_id", "status", "detail"]]
    lost = board[board["status"] == "failed"].iloc[0]
    assert lost["detail"].startswith("lost its Ray worker (its node died"), lost["detail"]
    assert loaded.metrics["trial_id"] == board[board["status"] == "completed"].iloc[0]["trial_id"]
    assert (tmp_path / "trials" / "search").is_dir()  # storage_path both nodes see


_DATA_PARALLEL_DRIVER = """
import sys, detect_automl as da
data, address, out = sys.argv[1:]
train = da.Dataset(data, split="train").subset(6)
val = da.Dataset(data, split="val").subset(2)
da.fit(train, val, time_limit=150, workers_per_trial=2, ray_address=address, output_dir=out, progress=False,
       hyperparameters={"pretrained": None, "batch_size": 2, "epochs": 2, "warmup_steps": 1,
                        "model": "ssdlite320_mobilenet_v3_large"})
"""


def test_one_data_parallel_trial_spans_both_nodes(two_node_cluster, datasets_dir, tmp_path):
    # Two workers of one CPU each, on nodes of one CPU each: Ray Train must place one per node.
    driver = subprocess.run([sys.executable, "-c", _DATA_PARALLEL_DRIVER, str(datasets_dir / "raccoon"),
                             two_node_cluster.address, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert driver.returncode == 0, driver.stdout[-3000:] + driver.stderr[-3000:]
    loaded = da.ObjectDetector.load(tmp_path / "model")
    board = loaded.leaderboard()
    assert len(board) == 1 and board.iloc[0]["status"] == "completed" and board.iloc[0]["epochs"] == 2, board
    nodes = board.iloc[0]["node"].split(",")
    assert len(nodes) == 2 and len(set(nodes)) == 2, board[["trial_id", "node"]]  # rank 0's node, then the other
    history = loaded.history[board.iloc[0]["trial_id"]]
    assert [r["epoch"] for r in history] == [1, 2] and history[-1]["loss"] < history[0]["loss"]
    assert loaded.metrics["map"] == pytest.approx(board.iloc[0]["val_map"])
    detections = loaded.predict(datasets_dir / "raccoon" / "JPEGImages" / "raccoon-10.jpg", score_threshold=0)
    assert len(detections.scores) > 0 and detections.boxes.shape == (len(detections.scores), 4)
    assert not any((tmp_path / "trials" / "workers").rglob("detector.pt"))  # moved to Tune's trial, not kept twice


_DATA_PARALLEL_NODE_DEATH = """
import sys, detect_automl as da
data, address, out = sys.argv[1:]
train = da.Dataset(data, split="train").subset(6)
val = da.Dataset(data, split="val").subset(2)
try:
    da.fit(train, val, time_limit=150, workers_per_trial=2, ray_address=address, output_dir=out, progress=False,
           hyperparameters={"pretrained": None, "batch_size": 2, "epochs": 30, "warmup_steps": 1,
                            "model": "ssdlite320_mobilenet_v3_large"})
except da.SearchError as exc:
    print("SearchError:", exc)
    sys.exit(3)
"""


def test_a_data_parallel_trial_fails_as_a_whole_when_a_node_dies(two_node_cluster, datasets_dir, tmp_path):
    """One worker on each node; the second node dies after the first epoch. Which rank Ray Train
    reports first varies (the lost one, or a survivor's gloo "Connection closed by peer"): the
    detail names the lost worker either way."""
    returncode, output = _kill_the_second_node_once_reported(_DATA_PARALLEL_NODE_DEATH, 1, two_node_cluster,
                                                             datasets_dir, tmp_path)
    assert returncode == 3, output[-5000:]  # the only trial failed: nothing to keep, a SearchError says why
    message = output[output.index("SearchError:"):]
    assert message.count("): failed: lost its Ray worker (its node died or its process was killed)") == 1, message
