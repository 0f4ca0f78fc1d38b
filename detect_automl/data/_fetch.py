"""Fetch one archive: resumable HTTP download into ``<file>.part``, checksum, extraction.

Private to the data package; :mod:`detect_automl.data.download` says which archives a dataset needs.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import DatasetError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60


@dataclass(frozen=True)
class Archive:
    """One file to download.

    Attributes:
        url: where it is served.
        filename: the name it is saved under (in the downloads folder).
        checksum: ``"md5:<hex>"`` or ``"sha256:<hex>"``; None when no stable checksum exists
            (the prepared content is then verified instead).
    """

    url: str
    filename: str
    checksum: str | None


def fetch(archive: Archive, folder: Path) -> Path:
    """The verified archive in ``folder``, downloaded (or resumed) unless it is already there.

    A file already at ``folder/<filename>`` (e.g. fetched by hand) is verified and used as is; a
    ``.part`` file is resumed with an HTTP Range request; a download that fails its checksum is
    deleted and never renamed to the final name.

    Raises:
        DatasetError: the server cannot be reached or answers an error, or the checksum differs
            (the message names the URL, the file and how to fetch it by hand).
    """
    target = folder / archive.filename
    if target.is_file():
        _verify(target, archive.checksum, f"{target} (already present) does not match the expected checksum; "
                "delete or replace it, then call again")
        logger.info("%s: present and verified", target)
        return target
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    _download(archive, part, target)
    try:
        _verify(part, archive.checksum, f"downloaded {archive.url} but the file does not match the expected "
                "checksum (deleted; call again to download it afresh)")
    except DatasetError:
        part.unlink()
        raise
    part.replace(target)
    return target


def extract(path: Path, folder: Path) -> None:
    """Unpack a ``.zip`` or ``.tar`` archive into ``folder`` (members cannot escape it)."""
    logger.info("extracting %s", path)
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                zf.extractall(folder)
        else:
            with tarfile.open(path) as tf:
                tf.extractall(folder, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot extract ({exc}); the archive is damaged: delete it and call again") from exc


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, checksum: str | None, failure: str) -> None:
    if checksum is None:
        return
    algorithm, expected = checksum.split(":", 1)
    got = file_digest(path, algorithm)
    if got != expected:
        raise DatasetError(f"{failure}: {algorithm} {got}, expected {expected}")


def _download(archive: Archive, part: Path, target: Path) -> None:
    """Stream ``archive.url`` into ``part``, resuming from its current size."""
    start = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "detect-automl", **({"Range": f"bytes={start}-"} if start else {})}
    request = urllib.request.Request(archive.url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            if start and not _resumes(response, start):
                logger.info("%s: the server does not resume at byte %d; downloading from the start", archive.url, start)
                start = 0
            length = response.headers.get("Content-Length")
            total = start + int(length) if length else None
            logger.info("downloading %s -> %s%s", archive.url, target, f" (resuming at byte {start})" if start else "")
            with part.open("ab" if start else "wb") as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                                                  desc=archive.filename) as bar:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the .part already holds the whole file: verify it
            return
        raise _by_hand(archive, target, f"the server answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, DNS, timeout, cut
        reason = getattr(exc, "reason", exc)
        raise _by_hand(archive, target, f"no connection or interrupted ({reason})") from exc


def _resumes(response, start: int) -> bool:
    """True when the server answered a Range request with the bytes from ``start`` on."""
    content_range = response.headers.get("Content-Range", "")
    return response.status == 206 and content_range.startswith(f"bytes {start}-")


def _by_hand(archive: Archive, target: Path, reason: str) -> DatasetError:
    """The error for a download that failed, with the steps to fetch the file by hand."""
    check = f"its {archive.checksum.split(':')[0]} is checked" if archive.checksum else "its content is checked"
    part = target.with_name(target.name + ".part")
    resume = f" (the {part.stat().st_size} bytes in {part} are resumed next time)" if part.is_file() else ""
    return DatasetError(
        f"cannot download {archive.url}: {reason}{resume}.\n"
        f"To fetch it by hand, download that URL on a machine with internet access (e.g. "
        f"`curl -L -o {archive.filename} '{archive.url}'`) and save it as {target}; call again and it is "
        f"picked up without the network ({check})."
    )

