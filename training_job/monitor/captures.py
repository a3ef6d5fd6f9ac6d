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
output of another model version has another shape, and some of it is hostile (a gzip
bomb, nesting deep enough to exhaust the JSON parser). `contract.capture` reads each
object and judges each line, the same way the scheduled monitor's Lambda does; each kind
of damage is counted in `ReadCounts`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from contract.capture import (
    MAX_LINE_BYTES,
    MAX_OBJECT_BYTES,
    READ_CHUNK_BYTES,
    CaptureFormatError,
    CaptureObjectError,
    CaptureRecord,
    parse_line,
    read_object,
)
from contract.s3 import S3_SCHEME, S3UriError, parse_s3_uri

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


# The reader's counts (contract.capture.read_object) by the field that reports each.
_FIELD_OF_COUNT = {
    "lines": "lines",
    "blank": "blank_lines",
    "truncated": "truncated_lines",
    "corrupt": "corrupt_lines",
    "oversized": "oversized_lines",
    "invalid": "invalid_records",
    "bad_output": "bad_output",
}
# A line that is not a usable capture record; `kind` names the counter (DAMAGE_KINDS).
RecordError = CaptureFormatError


def parse_time(text: str) -> datetime:
    """ISO-8601 (`2026-11-24T09:00:00Z`, with or without fractions) to an aware datetime."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _inference(
    record: CaptureRecord, probabilities: tuple[float, ...], key: str
) -> CapturedInference:
    return CapturedInference(
        key=key,
        event_id=record.event_id,
        inference_id=record.inference_id,
        time=record.inference_time,
        content_type=record.input.content_type.split(";")[0].strip().lower(),
        body=record.input.body(),
        probabilities=probabilities,
    )


def parse_record(line: bytes | str, key: str = "") -> CapturedInference:
    """One capture line to an inference, or RecordError naming its kind of damage."""
    record = parse_line(line)
    return _inference(record, record.probabilities(), key)


@dataclass(frozen=True)
class CaptureSource:
    """`s3://bucket/prefix/` or a local folder holding capture objects."""

    bucket: str | None
    prefix: str

    @classmethod
    def parse(cls, location: str) -> CaptureSource:
        if location.startswith(S3_SCHEME):
            try:  # the prefix as written: a key prefix, which may end mid-name
                bucket, prefix = parse_s3_uri(location)
            except S3UriError as error:
                raise CaptureSourceError(str(error)) from None
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


def _object_chunks(source: CaptureSource, key: str) -> Iterator[bytes]:
    """The object's bytes in chunks, never the whole object at once."""
    if source.bucket is None:
        with open(key, "rb") as file:
            yield from iter(lambda: file.read(READ_CHUNK_BYTES), b"")
        return
    body = boto3.client("s3").get_object(Bucket=source.bucket, Key=key)["Body"]
    try:
        yield from body.iter_chunks(READ_CHUNK_BYTES)
    finally:
        body.close()


def read_records(
    source: CaptureSource,
    counts: ReadCounts,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[CapturedInference]:
    """Every usable record under the source, in key order; damage goes into `counts`.

    Lines are read and judged by `contract.capture.read_object`, as the scheduled monitor
    reads them; an object that cannot be read to its end (gzip cut short or a bomb over
    MAX_OBJECT_BYTES unpacked, a read error) keeps the records before the damage and is
    counted in `unreadable_objects`."""
    for key in list_objects(source, since, until):
        counts.objects += 1
        line_counts: dict[str, int] = {}
        try:
            for record, probabilities in read_object(
                _object_chunks(source, key), line_counts, MAX_OBJECT_BYTES, MAX_LINE_BYTES
            ):
                if (since is not None and record.inference_time < since) or (
                    until is not None and record.inference_time >= until
                ):
                    counts.outside_time_range += 1
                    continue
                counts.records += 1
                yield _inference(record, probabilities, key)
        except (CaptureObjectError, OSError, BotoCoreError, ClientError) as error:
            # One unreadable object must not end the report.
            counts.unreadable_objects += 1
            counts.note_error(f"{key}: {str(error)[:200]}")
        finally:
            for name, value in line_counts.items():
                field_name = _FIELD_OF_COUNT[name]
                setattr(counts, field_name, getattr(counts, field_name) + value)


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
