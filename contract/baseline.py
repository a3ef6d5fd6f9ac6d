"""baseline.json: the profile a model's monitors compare its captured traffic against.

One writer, training_job/code/baseline_profile.py (inside the training container, and
`monitor baseline` here), and two readers: the scheduled Lambda (handlers/monitor.py,
standard library only) and `python -m training_job monitor` (training_job/monitor/
baseline.py, which adds numpy and the embeddings file on top). Both read the document
with `parse` below, so a document one monitor accepts the other accepts too, and a
damaged one is refused by both with the same reason.

The fields (every version writes all of them unless said otherwise):
  format_version        1, 2 or 3 (READABLE_VERSIONS; the writer's FORMAT_VERSION)
  classes               the model's class names, in output order
  confidence_threshold  the workflow threshold it was profiled at (default: contract.threshold)
  count                 N, the held-out validation images behind the model's answers
  probabilities         N rows of len(classes) class probabilities
  confidences           N top-class probabilities
  class_counts          predicted images per class (they sum to N)
  input_count           M, the images behind the input statistics (version 3: the whole
                        training split; before, the same N validation images)
  input_statistics      statistic name -> M per-image values
  upload_bytes          M byte sizes of the staged files, or null when unknown
  content_types         content type -> images, or null when unknown

Standard library only: packaged into the monitor's Lambda (serverless.yml's
package.patterns) and copied into the SageMaker code directory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from contract import shown
from contract.threshold import DEFAULT_THRESHOLD

BASELINE_FILE = "baseline.json"
EMBEDDINGS_FILE = "baseline_embeddings.npy"
# 1: the first; 2: the opponent colour moments joined the statistics; 3: input_count,
# the statistics from the whole training split, red_blue. Statistic names are not fixed
# here: each reader compares those it knows.
READABLE_VERSIONS = (1, 2, 3)


class BaselineFormatError(ValueError):
    """A document that is not a readable baseline.json; the message names the field."""


@dataclass(frozen=True)
class BaselineDocument:
    format_version: int
    classes: list[str]
    threshold: float  # the confidence threshold it was profiled at
    probabilities: list[list[float]]  # (count, len(classes))
    confidences: list[float]  # (count,)
    class_counts: dict[str, int]  # every class, summing to count
    input_count: int
    input_statistics: dict[str, list[float]]  # name -> (input_count,)
    upload_bytes: list[int] | None  # (input_count,)
    content_types: dict[str, int] | None

    @property
    def count(self) -> int:
        return len(self.probabilities)

    @property
    def class_share(self) -> dict[str, float]:
        return {name: self.class_counts[name] / self.count for name in self.classes}


def _number(value: Any, field: str) -> float:
    # bool is an int to Python, not a number in a profile.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BaselineFormatError(f"{field} must hold finite numbers, got {shown(value)}")
    return float(value)


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BaselineFormatError(f"{field} must be a whole number >= 0, got {shown(value)}")
    return value


def _numbers(value: Any, length: int, field: str) -> list[float]:
    if not isinstance(value, list) or len(value) != length:
        raise BaselineFormatError(f"{field} must be a list of {length} numbers")
    return [_number(v, field) for v in value]


def _mapping(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BaselineFormatError(f"{field} must be an object, got {shown(value)}")
    return value


def _parse(document: Any) -> BaselineDocument:
    document = _mapping(document, "the document")
    for required in (
        "format_version",
        "classes",
        "probabilities",
        "confidences",
        "class_counts",
        "input_statistics",
    ):
        if required not in document:
            raise BaselineFormatError(f"no {required}")
    version = document["format_version"]
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise BaselineFormatError(
            f"format_version {shown(version)} is not one of {list(READABLE_VERSIONS)} "
            "(a newer writer than this reader?)"
        )
    classes = document["classes"]
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(name, str) and name for name in classes)
        or len(set(classes)) != len(classes)
    ):
        raise BaselineFormatError("classes must be a list of distinct, non-empty names")
    threshold = _number(document.get("confidence_threshold", DEFAULT_THRESHOLD), "threshold")
    if not 0.0 < threshold <= 1.0:
        raise BaselineFormatError(f"confidence_threshold must be in (0, 1], got {threshold}")

    rows = document["probabilities"]
    if not isinstance(rows, list) or len(rows) < 2:
        raise BaselineFormatError("probabilities must hold at least 2 rows")
    count = len(rows)
    if "count" in document and document["count"] != count:
        raise BaselineFormatError(f"count is {shown(document['count'])}, probabilities {count}")
    probabilities = [_numbers(row, len(classes), "each probabilities row") for row in rows]
    confidences = _numbers(document["confidences"], count, "confidences")
    if not all(0.0 <= c <= 1.0 for c in confidences):
        raise BaselineFormatError("confidences must be in [0, 1]")
    counts = _mapping(document["class_counts"], "class_counts")
    if set(counts) - set(classes):
        raise BaselineFormatError(f"class_counts names classes not in classes: {shown(counts)}")
    class_counts = {name: _count(counts.get(name, 0), "class_counts") for name in classes}
    if sum(class_counts.values()) != count:
        raise BaselineFormatError(f"class_counts sum to {sum(class_counts.values())}, not {count}")

    # Before version 3 the input statistics came from the same images as the answers.
    input_count = document.get("input_count", count)
    if isinstance(input_count, bool) or not isinstance(input_count, int):
        raise BaselineFormatError(f"input_count is not a number: {shown(input_count)}")
    if input_count < 2:
        raise BaselineFormatError(f"input_count must be at least 2, got {input_count}")
    statistics = {}
    for name, values in _mapping(document["input_statistics"], "input_statistics").items():
        if not isinstance(values, list) or len(values) != input_count:
            raise BaselineFormatError(
                f"every input statistic needs {input_count} values, {shown(name)} does not"
            )
        statistics[str(name)] = _numbers(values, input_count, f"input_statistics[{shown(name)}]")
    upload = document.get("upload_bytes")
    if upload is not None:
        if not isinstance(upload, list) or len(upload) != input_count:
            length = len(upload) if isinstance(upload, list) else shown(upload)
            raise BaselineFormatError(
                f"upload_bytes has {length} values, not input_count {input_count}"
            )
        upload = [_count(size, "upload_bytes") for size in upload]
    content_types = document.get("content_types")
    if content_types is not None:
        content_types = {
            str(name): _count(images, "content_types")
            for name, images in _mapping(content_types, "content_types").items()
        }
    return BaselineDocument(
        format_version=version,
        classes=list(classes),
        threshold=threshold,
        probabilities=probabilities,
        confidences=confidences,
        class_counts=class_counts,
        input_count=input_count,
        input_statistics=statistics,
        upload_bytes=upload,
        content_types=content_types,
    )


def parse(document: Any, source: str) -> BaselineDocument:
    """`document` (json.loads of a baseline.json from `source`) checked field by field."""
    try:
        return _parse(document)
    except BaselineFormatError as error:
        raise BaselineFormatError(f"{source}: not a baseline document: {error}") from None


def loads(data: bytes, source: str) -> BaselineDocument:
    """baseline.json's bytes, parsed and checked."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise BaselineFormatError(
            f"{source}: not a baseline document: not JSON ({str(error)[:200]})"
        ) from None
    return parse(document, source)
