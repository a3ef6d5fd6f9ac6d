"""The staged manifests' files: `*.lst` written atomically, and `manifest.json`.

The `.lst` format itself (`row<TAB>label<TAB>filename`) is `contract.manifest`, which
training reads inside the SageMaker container too.

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
from typing import Any

from contract import shown
from contract.manifest import LstEntry, ManifestError, format_lst

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
SPLITS = ("train", "test")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


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
                raise ManifestError(f"manifest counts[{shown(split)}] must count every class")
            if not all(_is_count(n) for n in per_class.values()):
                raise ManifestError(
                    f"manifest counts[{shown(split)}] must be non-negative integers"
                )
        for name in ("archive_sha256", "content_sha256"):
            if not _SHA256_HEX.fullmatch(_field(document, name, str)):
                raise ManifestError(f"manifest field {shown(name)} must be a hex SHA-256")
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
        raise ManifestError(f"manifest has no field {shown(name)}")
    value = document[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"manifest field {shown(name)} must be a {kind.__name__}")
    return value


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_manifest(path: Path) -> Manifest:
    return Manifest.from_json(path.read_bytes())


def write_manifest(path: Path, manifest: Manifest) -> None:
    write_atomically(path, manifest.to_json().encode())
