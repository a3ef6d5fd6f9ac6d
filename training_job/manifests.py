"""The one module that reads and writes the staged manifests: `*.lst` and `manifest.json`.

`train.lst` / `test.lst` are the SageMaker image-classification reference's format, one
image a line: `row<TAB>label<TAB>filename`, where `row` is the image's row in the archive
split it came from, `label` the index of its class in the staged class order, and
`filename` the PNG's name under `train/` or `test/`.

`manifest.json` describes one staging: the classes, the counts, the source, the archive's
SHA-256 and a hash of every staged object's content. It is written last, so its presence
means the staging it describes completed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from training_job.errors import bounded

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
SPLITS = ("train", "test")

# Consumers join filenames onto local directories and S3 prefixes: a name with a slash or
# a leading dot could escape them, so only plain CIFAR-style names are accepted.
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# A .lst larger than this is not one of ours (the full CIFAR-100 train split is ~2.5 MB).
MAX_LST_BYTES = 64 * 2**20


class ManifestError(ValueError):
    """A `.lst` or `manifest.json` is malformed; the message names the line or field."""


class LstEntry(NamedTuple):
    row: int
    label: int
    filename: str


def is_safe_filename(name: str) -> bool:
    return bool(_SAFE_FILENAME.fullmatch(name)) and ".." not in name


def format_lst(entries: Iterable[LstEntry]) -> str:
    lines = []
    for entry in entries:
        if entry.row < 0 or entry.label < 0 or not is_safe_filename(entry.filename):
            raise ManifestError(f"cannot write the .lst entry {bounded(entry)}")
        lines.append(f"{entry.row}\t{entry.label}\t{entry.filename}\n")
    return "".join(lines)


def parse_lst(text: str) -> list[LstEntry]:
    """Parse `.lst` text; every line must be `row<TAB>label<TAB>filename`."""
    if len(text) > MAX_LST_BYTES:
        raise ManifestError(f".lst text of {len(text)} characters is over {MAX_LST_BYTES}")
    entries = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) != 3:
            raise ManifestError(
                f"line {number}: expected 3 tab-separated fields, got {bounded(line)}"
            )
        row, label, filename = fields
        if not (row.isascii() and row.isdigit() and label.isascii() and label.isdigit()):
            raise ManifestError(
                f"line {number}: row and label must be integers, got {bounded(line)}"
            )
        if not is_safe_filename(filename):
            raise ManifestError(f"line {number}: unsafe or empty filename {bounded(filename)}")
        if filename in seen:
            raise ManifestError(f"line {number}: duplicate filename {bounded(filename)}")
        seen.add(filename)
        entries.append(LstEntry(int(row), int(label), filename))
    return entries


def read_lst(path: Path) -> list[LstEntry]:
    try:
        raw = path.read_bytes()
        return parse_lst(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path}: not UTF-8 text: {error}") from error


def write_lst(path: Path, entries: Iterable[LstEntry]) -> None:
    write_atomically(path, format_lst(entries).encode())


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def content_sha256(md5_by_key: Mapping[str, str]) -> str:
    """One hash over every staged object (key relative to the prefix, and its MD5).

    MD5 because it is what S3 reports as the ETag of a single-part upload under SSE-S3,
    so the bucket's listing can be checked against the manifest without downloading.
    """
    digest = hashlib.sha256()
    for key in sorted(md5_by_key):
        digest.update(f"{key}\t{md5_by_key[key]}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    classes: tuple[str, ...]
    counts: dict[str, dict[str, int]]  # split -> class -> number of images
    source: str
    archive_sha256: str
    content_sha256: str
    objects: int  # staged objects besides manifest.json (PNGs and .lst files)

    def total(self, split: str) -> int:
        return sum(self.counts[split].values())

    def to_json(self) -> str:
        document = {
            "format": MANIFEST_FORMAT,
            "classes": list(self.classes),
            "counts": {split: self.counts[split] for split in SPLITS},
            "source": self.source,
            "archive_sha256": self.archive_sha256,
            "content_sha256": self.content_sha256,
            "objects": self.objects,
        }
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            document = json.loads(text)
        except (ValueError, UnicodeDecodeError) as error:
            raise ManifestError(f"manifest is not JSON: {error}") from error
        if not isinstance(document, dict):
            raise ManifestError("manifest must be a JSON object")
        if document.get("format") != MANIFEST_FORMAT:
            raise ManifestError(
                f"manifest format {document.get('format')!r} is not {MANIFEST_FORMAT}"
            )
        classes = _field(document, "classes", list)
        if not classes or not all(isinstance(name, str) and name for name in classes):
            raise ManifestError("manifest field 'classes' must be a non-empty list of names")
        counts = _field(document, "counts", dict)
        if set(counts) != set(SPLITS):
            raise ManifestError(f"manifest field 'counts' must have exactly {list(SPLITS)}")
        for split in SPLITS:
            per_class = counts[split]
            if not isinstance(per_class, dict) or set(per_class) != set(classes):
                raise ManifestError(f"manifest counts[{bounded(split)}] must count every class")
            if not all(_is_count(n) for n in per_class.values()):
                raise ManifestError(
                    f"manifest counts[{bounded(split)}] must be non-negative integers"
                )
        for name in ("archive_sha256", "content_sha256"):
            if not _SHA256_HEX.fullmatch(_field(document, name, str)):
                raise ManifestError(f"manifest field {bounded(name)} must be a hex SHA-256")
        objects = _field(document, "objects", int)
        if not _is_count(objects):
            raise ManifestError("manifest field 'objects' must be a non-negative integer")
        return cls(
            classes=tuple(classes),
            counts={split: dict(counts[split]) for split in SPLITS},
            source=_field(document, "source", str),
            archive_sha256=document["archive_sha256"],
            content_sha256=document["content_sha256"],
            objects=objects,
        )


def _field(document: dict[str, Any], name: str, kind: type) -> Any:
    if name not in document:
        raise ManifestError(f"manifest has no field {bounded(name)}")
    value = document[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"manifest field {bounded(name)} must be a {kind.__name__}")
    return value


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_manifest(path: Path) -> Manifest:
    return Manifest.from_json(path.read_bytes())


def write_manifest(path: Path, manifest: Manifest) -> None:
    write_atomically(path, manifest.to_json().encode())
