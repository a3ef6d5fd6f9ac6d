"""Stream SageMaker Model Monitor capture records from S3 (or a local folder), in
constant memory, counting every kind of damage instead of stopping on it.

A capture object is JSON lines, one record a line (SageMaker's documented format; the
local endpoint writes the same):
  {"captureData": {"endpointInput": {"observedContentType": "image/png", "mode": "INPUT",
     "data": "<base64>", "encoding": "BASE64"},
   "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
     "data": "[0.97, 0.03]", "encoding": "JSON"}},
   "eventMetadata": {"eventId": "...", "inferenceTime": "2026-11-24T09:00:00Z",
     "inferenceId": "..."}, "eventVersion": "0"}
under `<prefix>/<endpoint>/<variant>/YYYY/MM/DD/HH/<mm-ss-mmm>-<uuid>.jsonl`, plain or
gzip-compressed. Real capture data is messy: the last line of an object being written is
cut short, lines get corrupted, a client posts something that is not an image, the
output of another model version has another shape. Each is counted in `ReadCounts`.
"""

from __future__ import annotations

import binascii
import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import boto3

from training_job import capture

# A 32×32 image is a few KB; a line this long is an attack or a bug, not a photo.
MAX_LINE_BYTES = 8 * 1024 * 1024
_HOUR_IN_KEY = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/(\d{2})/[^/]*$")


class CaptureSourceError(ValueError):
    """The capture location itself is unusable (bad URL, missing bucket or folder)."""


@dataclass(frozen=True)
class CapturedInference:
    """One captured inference: what was posted and what the model answered."""

    key: str
    event_id: str | None
    inference_id: str | None
    time: datetime | None
    content_type: str
    body: bytes
    probabilities: tuple[float, ...]


@dataclass
class ReadCounts:
    """What the reader met; every field is reported, none stops the reader."""

    objects: int = 0
    unreadable_objects: int = 0
    lines: int = 0
    records: int = 0
    blank_lines: int = 0
    truncated_lines: int = 0
    corrupt_lines: int = 0
    oversized_lines: int = 0
    invalid_records: int = 0
    bad_output: int = 0
    outside_time_range: int = 0
    errors: list[str] = field(default_factory=list)

    def note_error(self, message: str) -> None:
        # Keep the first few messages for the report; counting is what scales.
        if len(self.errors) < 20:
            self.errors.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


_COUNTER_OF_KIND = {"invalid": "invalid_records", "bad_output": "bad_output"}


class RecordError(ValueError):
    """A line that is JSON but not a usable capture record (`kind` names the counter)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def parse_time(text: str) -> datetime:
    """ISO-8601 (`2026-11-24T09:00:00Z`, with or without fractions) to an aware datetime."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _probabilities(body: bytes) -> tuple[float, ...]:
    """The endpoint's answer: a JSON list of class probabilities."""
    values = json.loads(body)
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    ):
        raise ValueError("output is not a list of probabilities")
    probabilities = tuple(float(v) for v in values)
    if not all(0.0 <= p <= 1.0 for p in probabilities):
        raise ValueError("output has values outside [0, 1]")
    return probabilities


def parse_record(line: bytes | str, key: str = "") -> CapturedInference:
    """One capture line to an inference. Raises json.JSONDecodeError for a line that is not
    JSON (the caller tells truncated from corrupt) and RecordError (kind `invalid`: not a
    capture record; `bad_output`: the answer is not a list of probabilities)."""
    try:
        record = capture.parse_line(line)
    except capture.CaptureFormatError as error:
        if isinstance(error.__cause__, json.JSONDecodeError | UnicodeDecodeError):
            raise json.JSONDecodeError(str(error), "", 0) from error
        raise RecordError("invalid", str(error)) from error
    try:
        probabilities = _probabilities(record.output.body())
    except (ValueError, binascii.Error) as error:
        raise RecordError("bad_output", f"endpointOutput: {error}") from error
    return CapturedInference(
        key=key,
        event_id=record.event_id,
        inference_id=record.inference_id,
        time=record.inference_time,
        content_type=record.input.content_type.split(";")[0].strip().lower(),
        body=record.input.body(),
        probabilities=probabilities,
    )


@dataclass(frozen=True)
class CaptureSource:
    """`s3://bucket/prefix/` or a local folder holding capture objects."""

    bucket: str | None
    prefix: str

    @classmethod
    def parse(cls, location: str) -> CaptureSource:
        if location.startswith("s3://"):
            bucket, _, prefix = location[len("s3://") :].partition("/")
            if not bucket:
                raise CaptureSourceError(f"no bucket in {location!r}")
            return cls(bucket=bucket, prefix=prefix)
        if "://" in location:
            raise CaptureSourceError(
                f"captures must be s3://BUCKET/PREFIX or a folder: {location!r}"
            )
        if not Path(location).is_dir():
            raise CaptureSourceError(f"no such capture folder: {location}")
        return cls(bucket=None, prefix=location)


def _key_hour(key: str) -> datetime | None:
    match = _HOUR_IN_KEY.search(key)
    if not match:
        return None
    year, month, day, hour = (int(part) for part in match.groups())
    try:
        return datetime(year, month, day, hour, tzinfo=UTC)
    except ValueError:
        return None


def _hour_may_hold(key: str, since: datetime | None, until: datetime | None) -> bool:
    """Whether an object's hour folder can hold records in [since, until)."""
    hour = _key_hour(key)
    if hour is None:
        return True
    if since is not None and hour.timestamp() + 3600 <= since.timestamp():
        return False
    return not (until is not None and hour >= until)


def list_objects(
    source: CaptureSource, since: datetime | None = None, until: datetime | None = None
) -> Iterator[str]:
    """Capture object keys (or file paths) in key order, which is time order per variant."""
    if source.bucket is None:
        root = Path(source.prefix)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = path.as_posix()
            if name.endswith((".jsonl", ".jsonl.gz", ".json", ".gz")) and _hour_may_hold(
                "/" + path.relative_to(root).as_posix(), since, until
            ):
                yield name
        return
    s3 = boto3.client("s3")
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=source.bucket, Prefix=source.prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                if not key.endswith("/") and _hour_may_hold(key, since, until):
                    yield key
    except s3.exceptions.NoSuchBucket as error:
        raise CaptureSourceError(f"no such bucket: {source.bucket}") from error


class _RawBody(io.RawIOBase):
    """botocore's StreamingBody as a raw stream, so it can be buffered and peeked."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._body.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        self._body.close()
        super().close()


def _open_object(source: CaptureSource, key: str) -> IO[bytes]:
    raw: IO[bytes]
    if source.bucket is None:
        raw = open(key, "rb")  # noqa: SIM115 (closed by the caller)
    else:
        body = boto3.client("s3").get_object(Bucket=source.bucket, Key=key)["Body"]
        raw = io.BufferedReader(_RawBody(body), buffer_size=256 * 1024)
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    return buffered


def _lines(stream: IO[bytes], counts: ReadCounts) -> Iterator[tuple[bytes, bool]]:
    """(line, ended_with_newline); overlong lines are skipped and counted."""
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            counts.oversized_lines += 1
            counts.lines += 1
            while True:  # drain the rest of the overlong line
                rest = stream.readline(MAX_LINE_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            continue
        yield line, line.endswith(b"\n")


def read_records(
    source: CaptureSource,
    counts: ReadCounts,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[CapturedInference]:
    """Every usable record under the source, in key order; damage goes into `counts`."""
    for key in list_objects(source, since, until):
        counts.objects += 1
        try:
            stream = _open_object(source, key)
        except Exception as error:  # one unreadable object must not end the report
            counts.unreadable_objects += 1
            counts.note_error(f"{key}: {error}")
            continue
        try:
            for line, complete in _lines(stream, counts):
                counts.lines += 1
                if not line.strip():
                    counts.blank_lines += 1
                    continue
                try:
                    record = parse_record(line, key)
                except json.JSONDecodeError:
                    if complete:
                        counts.corrupt_lines += 1
                    else:
                        counts.truncated_lines += 1
                    continue
                except RecordError as error:
                    counter = _COUNTER_OF_KIND[error.kind]
                    setattr(counts, counter, getattr(counts, counter) + 1)
                    continue
                if record.time is not None and (
                    (since is not None and record.time < since)
                    or (until is not None and record.time >= until)
                ):
                    counts.outside_time_range += 1
                    continue
                counts.records += 1
                yield record
        except (OSError, EOFError, zlib.error) as error:
            # A gzip object cut short: keep what was read, count the object.
            counts.unreadable_objects += 1
            counts.note_error(f"{key}: {error}")
        finally:
            stream.close()


def read_labels(path: Path) -> dict[str, str]:
    """Ground truth keyed by inferenceId or eventId.

    Accepts a CSV with a header naming `inferenceId` or `eventId` and `label`, or SageMaker's
    ground-truth JSON lines (`{"groundTruthData": {"data": "motorcycle", ...},
    "eventMetadata": {"eventId": "..."}}`). Labels are class names or class indices.
    """
    text = path.read_text(encoding="utf-8")
    labels: dict[str, str] = {}
    if text.lstrip().startswith("{"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                document = json.loads(line)
                metadata = document.get("eventMetadata", {})
                identifier = metadata.get("inferenceId") or metadata.get("eventId")
                label = document["groundTruthData"]["data"]
            except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a ground-truth record: {error}") from error
            if not isinstance(identifier, str):
                raise ValueError(f"{path}:{number}: no inferenceId or eventId")
            labels[identifier] = str(label).strip()
        return labels
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    id_field = next((f for f in ("inferenceId", "eventId") if f in fields), None)
    if id_field is None or "label" not in fields:
        raise ValueError(f"{path}: the header must name inferenceId or eventId, and label")
    for row in reader:
        identifier, label = row.get(id_field), row.get("label")
        if identifier and label:
            labels[identifier] = label.strip()
    return labels
