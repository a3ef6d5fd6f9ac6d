"""The `.lst` manifest: the one reader and writer of `row<TAB>label<TAB>filename`.

`train.lst` / `test.lst` are the SageMaker image-classification reference's format, one
image a line: `row` is the image's row in the archive split it came from, `label` the
index of its class in the staged class order, `filename` the image's name under `train/`
or `test/`. Staging writes them, training (inside the SageMaker container), evaluation,
the monitor's baseline and the tests read them, all through this module.

The rules, one for every reader:
- a label is a non-negative integer, written as digits ("1") or as an integral float
  ("1.000000", as MXNet's im2rec and the SageMaker reference write it); "1.5", "-1",
  "1e0" are refused, a fractional label names no class;
- a row is a non-negative integer;
- every line holds an image: the file's last line may end in a newline, but an empty or
  whitespace-only line anywhere is refused (a machine-written manifest has none, so one
  means the file was cut or edited, and its image count would silently differ);
- a filename is a plain name (consumers join it onto directories and S3 prefixes), and
  names no image twice.

Standard library only: it is copied into the SageMaker code directory (the estimator's
`dependencies`), where `train.py` reads the channels with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from contract import shown

# Plain CIFAR-style names: a slash or a leading dot could escape the directory joined on.
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_ROW = re.compile(r"[0-9]+")
_LABEL = re.compile(r"([0-9]+)(?:\.0+)?")  # "1", or an integral float such as "1.000000"
# A .lst larger than this is not one of ours (the full CIFAR-100 train split is ~2.5 MB).
MAX_LST_BYTES = 64 * 2**20


class ManifestError(ValueError):
    """A manifest is malformed; the message names the line or field."""


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
            raise ManifestError(f"cannot write the .lst entry {shown(tuple(entry))}")
        lines.append(f"{entry.row}\t{entry.label}\t{entry.filename}\n")
    return "".join(lines)


def parse_lst(text: str) -> list[LstEntry]:
    """Parse `.lst` text by the rules above; ManifestError names the first bad line."""
    if len(text) > MAX_LST_BYTES:
        raise ManifestError(f".lst text of {len(text)} characters is over {MAX_LST_BYTES}")
    entries = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            raise ManifestError(f"line {number}: blank line (every line must list an image)")
        fields = line.split("\t")
        if len(fields) != 3:
            raise ManifestError(
                f"line {number}: expected 3 tab-separated fields "
                f"(row<TAB>label<TAB>filename), got {shown(line)}"
            )
        row, label, filename = fields
        label_digits = _LABEL.fullmatch(label)  # [0-9]: ASCII digits only, not "٣"
        if not _ROW.fullmatch(row) or label_digits is None:
            raise ManifestError(
                f"line {number}: row and label must be non-negative integers "
                f"(a label may be written 1.000000), got {shown(line)}"
            )
        if not is_safe_filename(filename):
            raise ManifestError(f"line {number}: unsafe or empty filename {shown(filename)}")
        if filename in seen:
            raise ManifestError(f"line {number}: duplicate filename {shown(filename)}")
        seen.add(filename)
        entries.append(LstEntry(int(row), int(label_digits.group(1)), filename))
    return entries


def read_lst(path: Path) -> list[LstEntry]:
    """Parse the `.lst` file at `path`, refusing one over MAX_LST_BYTES before reading it."""
    try:
        size = path.stat().st_size
        if size > MAX_LST_BYTES:
            raise ManifestError(f"{path} is {size} bytes, over {MAX_LST_BYTES}: not a .lst")
        return parse_lst(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path}: not UTF-8 text: {error}") from error
