"""The CIFAR-100 python archive: a resumable, checked download and a guarded reader.

The archive comes from the internet (or a path someone hands us), so nothing in it is
trusted: the tar is read member by member without extracting anything, only the three
expected pickles are looked at, and they are unpickled by an unpickler that can build
numpy arrays and nothing else.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import posixpath
import re
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import requests
from tqdm import tqdm

from contract import shown
from contract.manifest import is_safe_filename

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
# Archives whose bytes are known: downloaded from one of these URLs, a file is kept only
# when its MD5 matches. Any other source is checked for layout and sizes instead.
KNOWN_MD5: dict[str, str] = {OFFICIAL_URL: "eb9058c3a382ffc7106e4002c42a8d85"}

ROOT = "cifar-100-python"
MEMBERS = {"train": f"{ROOT}/train", "test": f"{ROOT}/test", "meta": f"{ROOT}/meta"}
# The official train pickle is ~155 MB; twice the largest real member is room enough.
MAX_MEMBER_BYTES = 320 * 2**20
# The official archive has 5 entries (the directory, file.txt~, train, test, meta).
MAX_MEMBERS = 64
# The official archive is 169,001,437 bytes.
MAX_DOWNLOAD_BYTES = 512 * 2**20
PIXELS = 32 * 32 * 3
CHUNK_BYTES = 1 << 20
# Small enough that an interrupted download keeps nearly all it received.
DOWNLOAD_CHUNK_BYTES = 16 * 1024

# CIFAR-100's fine labels, in label order: class names are checked against them before
# anything is downloaded, and an archive whose meta disagrees is not CIFAR-100.
_FINE_LABEL_NAMES_TEXT = """
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
    crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
    keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain
    mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain
    plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
    skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank
    telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree
    wolf woman worm"""
FINE_LABEL_NAMES: tuple[str, ...] = tuple(_FINE_LABEL_NAMES_TEXT.split())


class ArchiveError(ValueError):
    """The archive is not a CIFAR-100 python archive we accept; the message says why."""


class DownloadError(RuntimeError):
    """The download failed (a partial file is kept to resume) or its bytes were wrong."""


class _RefusedDownload(DownloadError):
    """What was received must not be resumed from: the partial file is discarded."""


@dataclass(frozen=True)
class Split:
    data: np.ndarray  # uint8 (N, 3072): 1024 red, 1024 green, 1024 blue, row-major 32×32
    fine_labels: list[int]
    filenames: list[str]


@dataclass(frozen=True)
class Archive:
    train: Split
    test: Split
    fine_label_names: tuple[str, ...]

    def split(self, name: str) -> Split:
        return {"train": self.train, "test": self.test}[name]


def is_url(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


def row_to_image(row: np.ndarray) -> np.ndarray:
    """One archive row (3072 values, channel-planar) to a uint8 (32, 32, 3) RGB image."""
    return row.reshape(3, 32, 32).transpose(1, 2, 0)


# --- download ------------------------------------------------------------------------


def cached_path(url: str, cache_dir: Path) -> Path:
    """Where a URL's archive is kept; the URL's hash keeps two sources from colliding."""
    name = posixpath.basename(urlsplit(url).path) or "archive"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100]
    return cache_dir / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"


def fetch(url: str, cache_dir: Path, timeout: float = 60.0) -> Path:
    """The archive at `url`, downloaded once into the cache and kept only when it checks.

    A partial download (`*.part`) is resumed with an HTTP Range request. A URL in
    KNOWN_MD5 must match its MD5; any other is read as an archive before it is kept.
    """
    path = cached_path(url, cache_dir)
    if path.is_file():
        return path
    part = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download(url, part, timeout)
    except _RefusedDownload:
        part.unlink(missing_ok=True)
        raise
    try:
        expected_md5 = KNOWN_MD5.get(url)
        if expected_md5 is not None:
            actual_md5 = file_digest(part, "md5")
            if actual_md5 != expected_md5:
                raise DownloadError(
                    f"checksum mismatch for {url}: MD5 {actual_md5}, expected {expected_md5}; "
                    "the download was discarded"
                )
        else:
            read_archive(part)
    except BaseException:
        # A file that failed its check must not be resumed from or kept.
        part.unlink(missing_ok=True)
        raise
    os.replace(part, path)
    return path


def _download(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
            if response.status_code == 416 and have:
                # The server has nothing past what we hold: the part is complete, or it is
                # longer than the file (then the checks below reject it).
                return
            if response.status_code not in (200, 206):
                raise DownloadError(f"download of {url} failed: HTTP {response.status_code}")
            resuming = response.status_code == 206
            if resuming and not response.headers.get("Content-Range", "").startswith(
                f"bytes {have}-"
            ):
                raise _RefusedDownload(
                    f"download of {url}: the server answered the range request for "
                    f"bytes {have}- with {response.headers.get('Content-Range')!r}"
                )
            start = have if resuming else 0
            remaining = response.headers.get("Content-Length")
            total = start + int(remaining) if remaining and remaining.isdigit() else None
            if total is not None and total > MAX_DOWNLOAD_BYTES:
                raise _RefusedDownload(
                    f"download of {url} is {total} bytes, over the limit of {MAX_DOWNLOAD_BYTES}"
                )
            with (
                part.open("ab" if resuming else "wb") as out,
                tqdm(
                    total=total,
                    initial=start,
                    unit="B",
                    unit_scale=True,
                    desc="download",
                    disable=None,
                ) as bar,
            ):
                written = start
                for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                    written += len(chunk)
                    if written > MAX_DOWNLOAD_BYTES:
                        raise _RefusedDownload(
                            f"download of {url} exceeded the limit of {MAX_DOWNLOAD_BYTES} bytes"
                        )
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and written != total:
                raise DownloadError(
                    f"download of {url} ended after {written} of {total} bytes; run again to resume"
                )
    except requests.RequestException as error:
        raise DownloadError(f"download of {url} failed: {error}; run again to resume") from error


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# --- reading -------------------------------------------------------------------------


# numpy 1.x pickles name numpy.core, numpy 2.x numpy._core; both resolve to the same function
# (imported directly: touching numpy.core warns under numpy 2).
_RECONSTRUCT = importlib.import_module("numpy._core.multiarray")._reconstruct
_PICKLE_GLOBALS: Mapping[tuple[str, str], Any] = MappingProxyType(
    {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR pickles, which reference only these three globals.

    Anything else (os.system, builtins.eval, ...) is refused by name before it is
    imported, so a hostile pickle cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name} (only numpy arrays are allowed)"
            ) from None


def read_archive(path: Path) -> Archive:
    """Read and check the three pickles of a CIFAR-100 python archive at `path`."""
    raw = _read_members(path)
    meta = _unpickle(raw["meta"], MEMBERS["meta"])
    names = _decode_names(_get(meta, b"fine_label_names", list, MEMBERS["meta"]), MEMBERS["meta"])
    if tuple(names) != FINE_LABEL_NAMES:
        raise ArchiveError(
            f"{MEMBERS['meta']}: fine_label_names are not CIFAR-100's 100 fine label names"
        )
    return Archive(
        train=_read_split(raw["train"], MEMBERS["train"]),
        test=_read_split(raw["test"], MEMBERS["test"]),
        fine_label_names=tuple(names),
    )


def _read_members(path: Path) -> dict[str, bytes]:
    wanted = {member: key for key, member in MEMBERS.items()}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise ArchiveError(f"{path}: more than {MAX_MEMBERS} members")
                name = _checked_name(member)
                if member.issym() or member.islnk():
                    raise ArchiveError(f"member {shown(member.name)} is a link; links are refused")
                if not (member.isfile() or member.isdir()):
                    raise ArchiveError(
                        f"member {shown(member.name)} is a device or special file; refused"
                    )
                if name not in wanted:
                    continue
                key = wanted[name]
                if key in found:
                    raise ArchiveError(f"member {shown(name)} appears twice")
                if not member.isfile():
                    raise ArchiveError(f"member {shown(name)} is not a regular file")
                if member.size > MAX_MEMBER_BYTES:
                    raise ArchiveError(
                        f"member {shown(name)} is {member.size} bytes, over the limit of "
                        f"{MAX_MEMBER_BYTES}"
                    )
                file = tar.extractfile(member)
                data = file.read() if file is not None else b""
                if len(data) != member.size:
                    raise ArchiveError(f"member {shown(name)} is truncated")
                found[key] = data
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        if path.is_file() and path.stat().st_size == 0:
            raise ArchiveError(f"{path}: empty file, not a CIFAR-100 archive") from error
        # tarfile's open error lists each compression it tried, one per line.
        detail = str(error).splitlines()[0].rstrip(":")
        raise ArchiveError(
            f"{path}: not a readable (or a truncated) tar archive: {detail}"
        ) from error
    missing = [MEMBERS[key] for key in MEMBERS if key not in found]
    if missing:
        raise ArchiveError(f"{path}: missing member(s) {', '.join(missing)}")
    return found


def _checked_name(member: tarfile.TarInfo) -> str:
    """The member's normalized name; absolute paths and `..` are refused, not cleaned."""
    name = member.name
    if not name or name.startswith("/") or re.match(r"[A-Za-z]:", name) or "\\" in name:
        raise ArchiveError(f"member {shown(name)} has an absolute or unsafe path; refused")
    if ".." in name.split("/"):
        raise ArchiveError(f"member {shown(name)} has a path traversal ('..'); refused")
    return posixpath.normpath(name)


def _unpickle(data: bytes, member: str) -> dict[bytes, Any]:
    try:
        value = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # a hostile pickle can raise almost anything
        raise ArchiveError(f"{member}: not a readable CIFAR pickle: {error}") from error
    if not isinstance(value, dict):
        raise ArchiveError(f"{member}: expected a dict, got {type(value).__name__}")
    return value


def _get(document: dict[bytes, Any], key: bytes, kind: type, member: str) -> Any:
    if key not in document:
        raise ArchiveError(f"{member}: no {key.decode()!r} entry")
    value = document[key]
    if not isinstance(value, kind):
        raise ArchiveError(f"{member}: {key.decode()!r} is not a {kind.__name__}")
    return value


def _decode_names(values: list[Any], member: str) -> list[str]:
    if not all(isinstance(value, bytes) for value in values):
        raise ArchiveError(f"{member}: names must be byte strings")
    try:
        return [value.decode("ascii") for value in values]
    except UnicodeDecodeError as error:
        raise ArchiveError(f"{member}: a name is not ASCII: {error}") from error


def _read_split(data: bytes, member: str) -> Split:
    document = _unpickle(data, member)
    pixels = _get(document, b"data", np.ndarray, member)
    if pixels.dtype != np.uint8:
        raise ArchiveError(f"{member}: data has dtype {pixels.dtype}, expected uint8")
    if pixels.ndim != 2 or pixels.shape[1] != PIXELS:
        raise ArchiveError(f"{member}: data has shape {pixels.shape}, expected (N, {PIXELS})")
    labels = _get(document, b"fine_labels", list, member)
    filenames = _decode_names(_get(document, b"filenames", list, member), member)
    rows = pixels.shape[0]
    if len(labels) != rows or len(filenames) != rows:
        raise ArchiveError(
            f"{member}: data has {rows} rows but {len(labels)} fine_labels and "
            f"{len(filenames)} filenames"
        )
    if not all(type(label) is int and 0 <= label < len(FINE_LABEL_NAMES) for label in labels):
        raise ArchiveError(f"{member}: fine_labels must be integers in 0..99")
    for filename in filenames:
        if not is_safe_filename(filename):
            raise ArchiveError(f"{member}: unsafe filename {shown(filename)}")
    return Split(data=np.ascontiguousarray(pixels), fine_labels=labels, filenames=filenames)
