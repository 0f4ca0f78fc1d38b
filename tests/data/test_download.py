"""download_dataset against a local HTTP server: checksums, resume, failures, preparation, reuse offline."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from detect_automl import Dataset, DatasetError, InputError, download_dataset
from detect_automl.data import download
from detect_automl.data.download import Archive

COMMIT = "142200ebe97be62981248aa0ffeb7c82f4def95d"


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` with HTTP Range support (unless ``server.ignore_range``) and logs
    ``(path, Range header)`` per request."""

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Range")))
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        ranged = "Range" in self.headers and not self.server.ignore_range
        start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if ranged else 0
        if start >= len(body) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    """A local file server: ``server.files`` {path: bytes}, ``server.requests`` [(path, range)]."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.ignore_range = {}, [], False
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _publish(monkeypatch, server, name: str, archives: dict[str, bytes], checksums: dict[str, str] | None = None):
    """Serve ``archives`` {filename: bytes} and point ``ARCHIVES[name]`` at them (md5 unless ``checksums``)."""
    entries = []
    for filename, body in archives.items():
        server.files[f"/{filename}"] = body
        checksum = (checksums or {}).get(filename, "md5:" + hashlib.md5(body).hexdigest())
        entries.append(Archive(f"http://127.0.0.1:{server.server_port}/{filename}", filename, checksum))
    monkeypatch.setitem(download.ARCHIVES, name, tuple(entries))


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _voc_members(raccoon: Path, year: str, splits: dict[str, list[str]]) -> dict[str, bytes]:
    """A VOC tar's members (``VOCdevkit/VOC<year>/...``) holding the given raccoon ids per split."""
    base = f"VOCdevkit/VOC{year}"
    members = {}
    for split, ids in splits.items():
        members[f"{base}/ImageSets/Main/{split}.txt"] = "".join(f"{i}\n" for i in ids).encode()
        for i in ids:
            members[f"{base}/Annotations/{i}.xml"] = (raccoon / "Annotations" / f"{i}.xml").read_bytes()
            members[f"{base}/JPEGImages/{i}.jpg"] = (raccoon / "JPEGImages" / f"{i}.jpg").read_bytes()
    return members


def _records(root: Path, ids: list[str]):
    by_id = {r.image_id: r for r in Dataset(root, format="voc")}
    return [by_id[i] for i in ids]


def test_voc_download_prepares_then_reuses_without_network(server, monkeypatch, tmp_path, datasets_dir,
                                                           assert_same_records):
    raccoon = datasets_dir / "raccoon"
    trainval, test = ["raccoon-1", "raccoon-10", "raccoon-100"], ["raccoon-101", "raccoon-102"]
    _publish(monkeypatch, server, "voc2007", {
        "VOCtrainval_06-Nov-2007.tar": _tar(_voc_members(raccoon, "2007", {"trainval": trainval})),
        "VOCtest_06-Nov-2007.tar": _tar(_voc_members(raccoon, "2007", {"test": test})),
    })
    root = download_dataset("voc2007", tmp_path)

    assert root == tmp_path / "voc2007"
    assert [r[1] for r in server.requests] == [None, None]  # two full downloads
    assert_same_records(Dataset(root, split="trainval").records, _records(raccoon, trainval))
    assert_same_records(Dataset(root, split="test").records, _records(raccoon, test))  # both tars merged
    assert not list((tmp_path / "downloads").iterdir())  # archives removed after preparation
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads", "voc2007"]  # no work folder left

    server.files.clear()
    assert download_dataset("voc2007", tmp_path) == root  # prepared: no request at all
    assert len(server.requests) == 2


@pytest.mark.parametrize("case", ["half", "complete", "server_ignores_range"])
def test_resumes_a_partial_download_with_a_range_request(server, monkeypatch, tmp_path, datasets_dir, case):
    body = _tar(_voc_members(datasets_dir / "raccoon", "2012", {"trainval": ["raccoon-1", "raccoon-2"]}))
    _publish(monkeypatch, server, "voc2012", {"VOCtrainval_11-May-2012.tar": body})
    server.ignore_range = case == "server_ignores_range"  # answers 200 with the whole file: start again
    offset = len(body) if case == "complete" else 5000  # complete: the server answers 416, the .part is verified
    part = tmp_path / "downloads" / "VOCtrainval_11-May-2012.tar.part"
    part.parent.mkdir()
    part.write_bytes(body[:offset])

    root = download_dataset("voc2012", tmp_path, keep_archives=True)

    assert server.requests == [("/VOCtrainval_11-May-2012.tar", f"bytes={offset}-")]
    assert (tmp_path / "downloads" / "VOCtrainval_11-May-2012.tar").read_bytes() == body  # verified, kept
    assert not part.exists()
    assert len(Dataset(root, split="trainval")) == 2


def test_checksum_mismatch_is_an_error_and_keeps_nothing(server, monkeypatch, tmp_path, datasets_dir):
    body = _tar(_voc_members(datasets_dir / "raccoon", "2012", {"trainval": ["raccoon-1"]}))
    _publish(monkeypatch, server, "voc2012", {"VOCtrainval_11-May-2012.tar": body}, {
        "VOCtrainval_11-May-2012.tar": "md5:" + "0" * 32})

    with pytest.raises(DatasetError, match=r"does not match the expected checksum.*md5 [0-9a-f]{32}, expected 0{32}"):
        download_dataset("voc2012", tmp_path)
    assert not list((tmp_path / "downloads").iterdir())  # neither the archive nor its .part
    assert not (tmp_path / "voc2012").exists()

    placed = tmp_path / "downloads" / "VOCtrainval_11-May-2012.tar"  # a bad file put there by hand
    placed.write_bytes(body)
    with pytest.raises(DatasetError, match="already present.*delete or replace it"):
        download_dataset("voc2012", tmp_path)
    assert placed.exists() and len(server.requests) == 1  # a user's file is never deleted or re-fetched


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("failure", ["offline", "http_404"])
def test_download_failure_says_how_to_fetch_by_hand(server, monkeypatch, tmp_path, datasets_dir, failure):
    body = _tar(_voc_members(datasets_dir / "raccoon", "2012", {"trainval": ["raccoon-1"]}))
    port = _closed_port() if failure == "offline" else server.server_port
    url = f"http://127.0.0.1:{port}/missing.tar"
    archive = Archive(url, "voc.tar", f"md5:{hashlib.md5(body).hexdigest()}")
    monkeypatch.setitem(download.ARCHIVES, "voc2012", (archive,))

    with pytest.raises(DatasetError) as info:
        download_dataset("voc2012", tmp_path)
    message = str(info.value)
    target = tmp_path / "downloads" / "voc.tar"
    assert f"cannot download {url}" in message and f"save it as {target}" in message and "by hand" in message
    assert ("no connection" in message) if failure == "offline" else ("HTTP 404" in message)
    assert not (tmp_path / "voc2012").exists()

    target.write_bytes(body)  # fetched by hand as the message says: verified and used
    assert len(Dataset(download_dataset("voc2012", tmp_path), split="trainval")) == 1


def _fruit_archive(fruit: Path, ids: dict[str, list[str]], tweak: dict[str, bytes] | None = None) -> bytes:
    """A zip laid out as GitHub's archive of the source commit (plus files the preparation must ignore)."""
    top = f"fruit_object_detection-{COMMIT}"
    members = {f"{top}/README.md": b"# fruit\n", f"{top}/train/image/apple_1.jpeg": b"duplicate"}
    for folder, split_ids in (("train_zip/train", ids["trainval"]), ("test_zip/test", ids["test"])):
        for i in split_ids:
            members[f"{top}/{folder}/{i}.jpg"] = (fruit / "JPEGImages" / f"{i}.jpg").read_bytes()
            members[f"{top}/{folder}/{i}.xml"] = (fruit / "Annotations" / f"{i}.xml").read_bytes()
    for name, data in (tweak or {}).items():
        members[f"{top}/{name}"] = data
    return _zip(members)


def _fruit_ids(fruit: Path) -> dict[str, list[str]]:
    return {s: (fruit / "ImageSets" / "Main" / f"{s}.txt").read_text().split() for s in ("trainval", "test")}


def test_fruit_prepared_from_the_github_archive_matches_the_reference(server, monkeypatch, tmp_path, shared_data):
    fruit = shared_data / "fruit"
    _publish(monkeypatch, server, "fruit", {"fruit.zip": _fruit_archive(fruit, _fruit_ids(fruit))}, {"fruit.zip": None})

    root = download_dataset("fruit", tmp_path)

    for split in ("train", "val", "trainval", "test"):  # the split rule reproduces the reference byte for byte
        name = f"ImageSets/Main/{split}.txt"
        assert (root / name).read_bytes() == (fruit / name).read_bytes(), split
    for sub in ("Annotations", "JPEGImages"):
        assert sorted(p.name for p in (root / sub).iterdir()) == sorted(p.name for p in (fruit / sub).iterdir())
    assert (root / "JPEGImages" / "apple_1.jpg").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # kept as in the source
    assert len(Dataset(root, split="val")) == 24

    server.files.clear()
    assert download_dataset("fruit", tmp_path) == root  # every file matches the manifest: no network
    assert len(server.requests) == 1


def test_fruit_archive_with_other_content_is_refused(server, monkeypatch, tmp_path, shared_data):
    fruit = shared_data / "fruit"
    ids = {"trainval": ["apple_1", "apple_10"], "test": ["apple_77"]}
    bad = _fruit_archive(fruit, ids, {"train_zip/train/apple_1.xml": b"<annotation/>"})
    _publish(monkeypatch, server, "fruit", {"fruit.zip": bad}, {"fruit.zip": None})

    with pytest.raises(DatasetError, match=r"do not match the fruit manifest: Annotations/apple_1\.xml \(different"):
        download_dataset("fruit", tmp_path)
    assert not (tmp_path / "fruit").exists()
    assert (tmp_path / "downloads" / "fruit.zip").exists()  # named in the advice: delete it to download again


def _coco_archives(fruits_nuts: Path) -> dict[str, bytes]:
    """COCO 2017's three zips, holding the fruits_nuts train and val splits."""
    annotations, zips = {}, {}
    for split, ours in (("train2017", "train"), ("val2017", "val")):
        text = (fruits_nuts / "annotations" / f"instances_{ours}.json").read_bytes()
        annotations[f"annotations/instances_{split}.json"] = text
        names = [image["file_name"] for image in json.loads(text)["images"]]
        zips[f"{split}.zip"] = _zip({f"{split}/{n}": (fruits_nuts / "images" / n).read_bytes() for n in names})
    return {"annotations_trainval2017.zip": _zip(annotations), **zips}


def test_coco_subset_keeps_only_the_categories_and_their_images(server, monkeypatch, tmp_path, datasets_dir,
                                                                  assert_same_records):
    fruits_nuts = datasets_dir / "fruits_nuts"
    _publish(monkeypatch, server, "coco2017", _coco_archives(fruits_nuts))

    subset = download_dataset("coco2017", tmp_path, categories=["fig"])

    assert subset == tmp_path / "coco2017-fig"
    full = tmp_path / "coco2017"
    dropped = 0
    for split, ours in (("train2017", "train"), ("val2017", "val")):
        source = Dataset(fruits_nuts, format="coco", split=ours)
        assert_same_records(Dataset(full, format="coco", split=split).records, source.records)
        fig = source.classes.index("fig")
        expected = [r.with_boxes(r.labels == fig) for r in source if (r.labels == fig).any()]
        for rec in expected:
            rec.labels = np.zeros_like(rec.labels)
        got = Dataset(subset, format="coco", split=split)
        assert got.classes == ["fig"]
        assert_same_records(got.records, expected)
        dropped += len(source) - len(expected)
    assert dropped == 2  # the two train images without a fig
    kept = {r.path.name for s in ("train2017", "val2017") for r in Dataset(subset, format="coco", split=s)}
    assert {p.name for p in (subset / "images").iterdir()} == kept

    server.files.clear()
    assert download_dataset("coco2017", tmp_path, categories=["fig"]) == subset  # no network
    with pytest.raises(InputError, match=r"\['walnut'\] are not in the dataset"):
        download_dataset("coco2017", tmp_path, categories=["walnut", "fig"])
    assert len(server.requests) == 3


def test_bad_arguments_and_a_foreign_folder(tmp_path):
    with pytest.raises(InputError, match="unknown dataset 'voc2010'"):
        download_dataset("voc2010", tmp_path)
    with pytest.raises(InputError, match="coco2017 only"):
        download_dataset("fruit", tmp_path, categories=["apple"])
    (tmp_path / "voc2012").mkdir()  # not ours: never overwritten
    with pytest.raises(DatasetError, match="exists but has no readable .detect_automl_prepared.json"):
        download_dataset("voc2012", tmp_path)


def test_cli_download_prepares_and_offline_exits_2_with_the_manual_steps(server, monkeypatch, tmp_path, datasets_dir,
                                                                         capsys):
    from detect_automl.cli import main

    body = _tar(_voc_members(datasets_dir / "raccoon", "2012", {"trainval": ["raccoon-1", "raccoon-2"]}))
    _publish(monkeypatch, server, "voc2012", {"VOCtrainval_11-May-2012.tar": body})
    assert main(["download", "voc2012", "--root", str(tmp_path / "ok")]) == 0
    assert f"prepared: {tmp_path / 'ok' / 'voc2012'}" in capsys.readouterr().out
    assert len(Dataset(tmp_path / "ok" / "voc2012", split="trainval")) == 2

    url = f"http://127.0.0.1:{_closed_port()}/VOCtrainval_11-May-2012.tar"
    monkeypatch.setitem(download.ARCHIVES, "voc2012", (Archive(url, "voc.tar", None),))
    assert main(["download", "voc2012", "--root", str(tmp_path / "offline")]) == 2
    assert f"cannot download {url}" in capsys.readouterr().err
