"""Small CIFAR-style archives (good and hostile) and a Range-capable HTTP server, for the
staging tests. Archives are built with tarfile/pickle/numpy, the way the real one is."""

from __future__ import annotations

import io
import pickle
import re
import struct
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from training_job.data.cifar import FINE_LABEL_NAMES

BICYCLE, MOTORCYCLE, APPLE = 8, 48, 0


def split_pickle(rows: int = 6, seed: int = 0, **overrides: Any) -> dict[bytes, Any]:
    """A split like the official pickles: bicycle, motorcycle and apple rows, interleaved."""
    rng = np.random.default_rng(seed)
    labels = [(BICYCLE, MOTORCYCLE, APPLE)[row % 3] for row in range(rows)]
    document: dict[bytes, Any] = {
        b"batch_label": b"training batch 1 of 1",
        b"fine_labels": labels,
        b"coarse_labels": [0] * rows,
        b"filenames": [f"img_{seed}_{row:04d}.png".encode() for row in range(rows)],
        b"data": rng.integers(0, 256, size=(rows, 3072), dtype=np.uint8),
    }
    document.update({key.encode(): value for key, value in overrides.items()})
    return document


def meta_pickle(names: tuple[str, ...] = FINE_LABEL_NAMES) -> dict[bytes, Any]:
    return {
        b"fine_label_names": [name.encode() for name in names],
        b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)],
    }


# The pure-Python pickler, whose dispatch table can be extended (typed loosely in typeshed).
_PurePythonPickler: Any = pickle._Pickler


class Python2Pickler(_PurePythonPickler):
    """Writes bytes the way Python 2 wrote `str` (BINSTRING), as the CIFAR pickles do;
    Python 3's protocol 2 would reference `_codecs.encode` instead."""

    dispatch: ClassVar[dict[type, Any]] = dict(_PurePythonPickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def python2_pickle(value: Any) -> bytes:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(value)
    return buffer.getvalue()


def member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def standard_members(
    train: Any = None, test: Any = None, meta: Any = None
) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The three members, each a document (pickled here, as Python 2 did) or raw bytes."""

    def encode(value: Any) -> bytes:
        return value if isinstance(value, bytes) else python2_pickle(value)

    return [
        member("cifar-100-python/train", encode(split_pickle(6, 1) if train is None else train)),
        member("cifar-100-python/test", encode(split_pickle(3, 2) if test is None else test)),
        member("cifar-100-python/meta", encode(meta_pickle() if meta is None else meta)),
    ]


def write_archive(
    path: Path,
    members: list[tuple[tarfile.TarInfo, bytes]],
    mode: Literal["w:gz", "w"] = "w:gz",
) -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


@dataclass
class FileServer:
    """Serves byte strings by path on 127.0.0.1, honouring `Range: bytes=N-`."""

    files: dict[str, bytes]
    requests: list[dict[str, str]] = field(default_factory=list)
    # Set to N to drop the connection after N bytes of a body (a network failure).
    cut_after: int | None = None
    url: str = ""


class _Handler(BaseHTTPRequestHandler):
    server_state: FileServer

    def do_GET(self) -> None:
        state = self.server_state
        state.requests.append(dict(self.headers))
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if state.cut_after is not None:
            payload = payload[: state.cut_after]
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_files(files: dict[str, bytes]) -> Iterator[FileServer]:
    state = FileServer(files)
    handler = type("Handler", (_Handler,), {"server_state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
