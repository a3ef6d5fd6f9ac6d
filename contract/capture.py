"""SageMaker Model Monitor capture records: the one reader, and its rules for damage.

An endpoint with data capture writes JSON lines, one record a line, plain or gzip:

    {"captureData": {
        "endpointInput": {"observedContentType": "image/png", "mode": "INPUT",
                          "data": "<base64>", "encoding": "BASE64"},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "data": "[0.97, 0.03]", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceId": "<caller's id, if sent>",
                       "inferenceTime": "2026-11-23T09:16:50Z"},
     "eventVersion": "0"}

The scheduled monitor (Lambda) and `training_job monitor` read captures with
`read_object`, so both count the same lines as damaged. Capture objects are input from
the network: a line or an object may be cut short, corrupt, hostile (nesting deep enough
to exhaust the parser's recursion, a gzip bomb) or written by another model version.
Each damaged line is counted by kind (`DAMAGE_KINDS`) and skipped; an object is read as a
stream with its decompressed size and its line length capped, so memory and time per
object stay bounded whatever it holds.

Standard library only: this file is packaged into the monitor's Lambda.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

EVENT_VERSION = "0"
ENCODINGS = ("BASE64", "JSON", "CSV")
# The limits below are the writer's and every reader's: the local endpoint's capture
# writer keeps each line and object within them, and the readers count what is over them
# as damage. They follow from the largest request body a capture holds: SageMaker's
# InvokeEndpoint limit (6 MB: 6,291,456 bytes, the `max` of botocore's BodyBlob), which the
# local endpoint enforces too and never raises (local_aws/endpoint/config.py).
MAX_CAPTURED_BODY_BYTES = 6 * 1024 * 1024
# Beside the base64 body, a line holds the answer (a list of probabilities: bytes) and the
# metadata; a MiB of room for them.
LINE_ROOM_BYTES = 1024 * 1024
# 9 MiB: a longer line is not a capture of this workflow, and reading it would only cost
# memory.
MAX_LINE_BYTES = 4 * -(-MAX_CAPTURED_BODY_BYTES // 3) + LINE_ROOM_BYTES
# Bytes read from one object, unpacked: seven of the largest lines, thousands of captured
# photos, and what the monitor's Lambda (256 MB, 120 s) parses in well under its time. A
# gzip bomb (1 MB that unpacks to 1 GB) stops here, counted as damage; it is never held in
# memory whole.
MAX_OBJECT_BYTES = 64 * 1024 * 1024
# Lines read from one object: a record of this workflow holds a base64 image (kilobytes),
# so MAX_OBJECT_BYTES holds well under this many; a bomb of newlines would otherwise cost
# a Python step per byte (64 million steps, minutes).
MAX_OBJECT_LINES = 200_000
READ_CHUNK_BYTES = 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
# Where `training_job deploy` publishes the deployed model's baseline profile for the
# scheduled monitor (serverless.yml's default BASELINE_KEY names the same key).
MONITOR_BASELINE_KEY = "monitoring/{endpoint}/baseline.json"
MAX_BASELINE_BYTES = 16 * 1024 * 1024
# The kinds of damaged line, as counted by every reader. "blank" lines are not damage.
DAMAGE_KINDS = ("truncated", "corrupt", "oversized", "invalid", "bad_output")


class CaptureFormatError(ValueError):
    """A line that is not a usable capture record; `kind` is one of DAMAGE_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class CaptureObjectError(ValueError):
    """An object that cannot be read to its end (bad or cut gzip, over MAX_OBJECT_BYTES)."""


class CapturedPayload:
    # Plain classes, not dataclasses: this module is imported on every Lambda cold start.
    __slots__ = ("content_type", "data", "encoding")

    def __init__(self, content_type: str, encoding: str, data: str) -> None:
        self.content_type = content_type
        self.encoding = encoding
        self.data = data  # as stored: base64 text for BASE64, the text itself otherwise

    def body(self) -> bytes:
        """The bytes the endpoint received or sent."""
        if self.encoding == "BASE64":
            return base64.b64decode(self.data, validate=True)
        return self.data.encode("utf-8")


class CaptureRecord:
    __slots__ = ("event_id", "inference_id", "inference_time", "input", "output")

    def __init__(
        self,
        event_id: str,
        inference_id: str | None,
        inference_time: datetime,
        input: CapturedPayload,
        output: CapturedPayload,
    ) -> None:
        self.event_id = event_id
        self.inference_id = inference_id
        self.inference_time = inference_time
        self.input = input
        self.output = output

    def probabilities(self) -> tuple[float, ...]:
        """The endpoint's answer as class probabilities, or CaptureFormatError `bad_output`."""
        try:
            values = json.loads(self.output.body())
        except (ValueError, RecursionError, binascii.Error) as error:
            raise CaptureFormatError("bad_output", f"endpointOutput: {error}") from None
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ):
            raise CaptureFormatError("bad_output", "endpointOutput is not a list of probabilities")
        probabilities = tuple(float(v) for v in values)
        if not all(0.0 <= p <= 1.0 for p in probabilities):
            raise CaptureFormatError("bad_output", "endpointOutput has values outside [0, 1]")
        return probabilities


def _invalid(message: str) -> CaptureFormatError:
    return CaptureFormatError("invalid", message)


def _parse_payload(section: object, mode: str) -> CapturedPayload:
    if not isinstance(section, dict):
        raise _invalid(f"endpoint{mode.title()} is not an object")
    if section.get("mode") != mode:
        raise _invalid(f"expected mode {mode!r}, got {str(section.get('mode'))[:40]!r}")
    fields = {name: section.get(name) for name in ("observedContentType", "encoding", "data")}
    for name, value in fields.items():
        if not isinstance(value, str):
            raise _invalid(f"{mode} {name} is missing or not a string")
    payload = CapturedPayload(
        str(fields["observedContentType"]), str(fields["encoding"]), str(fields["data"])
    )
    if payload.encoding not in ENCODINGS:
        raise _invalid(f"{mode} has unknown encoding {payload.encoding[:40]!r}")
    if payload.encoding == "BASE64":
        try:
            payload.body()
        except (binascii.Error, ValueError):
            raise _invalid(f"{mode} data is not valid base64") from None
    return payload


def parse_line(line: str | bytes, complete: bool = True) -> CaptureRecord:
    """One line to a record, or CaptureFormatError naming its kind of damage: `truncated`
    (not JSON and without its newline: the end of an object cut short), `corrupt` (not
    JSON, or nested too deep to parse), `invalid` (JSON, but not a capture record)."""
    try:
        document = json.loads(line)
    except (ValueError, RecursionError) as error:
        # ValueError covers JSONDecodeError and UnicodeDecodeError; RecursionError is what
        # the parser raises on a line of deeply nested brackets.
        kind = "corrupt" if complete or isinstance(error, RecursionError) else "truncated"
        reason = "nested too deep" if isinstance(error, RecursionError) else str(error)[:200]
        raise CaptureFormatError(kind, f"not JSON: {reason}") from None
    if not isinstance(document, dict) or not isinstance(document.get("captureData"), dict):
        raise _invalid("no captureData object")
    if document.get("eventVersion") != EVENT_VERSION:
        raise _invalid(f"unknown eventVersion {str(document.get('eventVersion'))[:40]!r}")
    metadata = document.get("eventMetadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("eventId"), str):
        raise _invalid("eventMetadata.eventId is missing")
    try:
        # SageMaker writes whole seconds ("...T09:05:07Z"); fractions are accepted too.
        inference_time = datetime.fromisoformat(str(metadata.get("inferenceTime")))
    except ValueError:
        raise _invalid("eventMetadata.inferenceTime is not ISO-8601") from None
    if inference_time.utcoffset() is None:
        raise _invalid("eventMetadata.inferenceTime has no time zone (ISO-8601 UTC)")
    inference_id = metadata.get("inferenceId")
    capture = document["captureData"]
    return CaptureRecord(
        event_id=metadata["eventId"],
        inference_id=inference_id if isinstance(inference_id, str) else None,
        inference_time=inference_time.astimezone(UTC),
        input=_parse_payload(capture.get("endpointInput"), "INPUT"),
        output=_parse_payload(capture.get("endpointOutput"), "OUTPUT"),
    )


def _decompressed(chunks: Iterable[bytes], max_bytes: int) -> Iterator[bytes]:
    """The object's bytes, gunzipped if it is gzip (any number of members), never more
    than `max_bytes` of them: past that, CaptureObjectError."""
    pieces = iter(chunks)
    first = next((chunk for chunk in pieces if chunk), b"")
    total = 0
    if first[:2] != GZIP_MAGIC:
        for chunk in _chain(first, pieces):
            total += len(chunk)
            if total > max_bytes:
                raise CaptureObjectError(f"the object is over {max_bytes} bytes")
            yield chunk
        return
    inflater = zlib.decompressobj(wbits=31)
    pending = False  # inside a gzip member that has not ended yet
    try:
        for chunk in _chain(first, pieces):
            data = chunk
            while data:
                pending = True
                # max_length bounds each step's output, so a bomb never sits in memory.
                out = inflater.decompress(data, READ_CHUNK_BYTES)
                total += len(out)
                if total > max_bytes:
                    raise CaptureObjectError(f"the object unpacks to over {max_bytes} bytes")
                if out:
                    yield out
                data = inflater.unconsumed_tail
                if inflater.eof:  # a member ended; concatenated members follow
                    data = inflater.unused_data
                    inflater = zlib.decompressobj(wbits=31)
                    pending = False
    except zlib.error as error:
        raise CaptureObjectError(f"not readable gzip: {error}") from None
    if pending:
        raise CaptureObjectError("the gzip stream is cut short")


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _lines(chunks: Iterable[bytes], max_line: int) -> Iterator[tuple[bytes | None, bool]]:
    """(line, ended with a newline) for each line; (None, ...) for a line over `max_line`
    bytes, which is dropped as it streams past, never held whole."""
    buffer = bytearray()
    skipping = False
    for chunk in chunks:
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start)
            stop = len(chunk) if end < 0 else end
            if not skipping:
                buffer += chunk[start:stop]
                if len(buffer) > max_line:
                    skipping = True
                    buffer.clear()
            if end < 0:
                break
            if skipping:
                yield None, True
                skipping = False
            else:
                yield bytes(buffer), True
                buffer.clear()
            start = end + 1
    if skipping:
        yield None, False
    elif buffer:
        yield bytes(buffer), False


def read_object(
    chunks: Iterable[bytes],
    counts: dict[str, int],
    max_bytes: int = MAX_OBJECT_BYTES,
    max_line: int = MAX_LINE_BYTES,
    max_lines: int = MAX_OBJECT_LINES,
) -> Iterator[tuple[CaptureRecord, tuple[float, ...]]]:
    """Each usable record of one capture object (its bytes as `chunks`) with its
    probabilities. Every line adds to `counts["lines"]`, a blank one to `counts["blank"]`,
    a damaged one to `counts[kind]`. Raises CaptureObjectError, after the records before
    the damage, when the object cannot be read to its end or holds over `max_lines` lines."""
    for number, (line, complete) in enumerate(
        _lines(_decompressed(chunks, max_bytes), max_line), start=1
    ):
        if number > max_lines:
            raise CaptureObjectError(f"the object holds over {max_lines} lines")
        counts["lines"] = counts.get("lines", 0) + 1
        try:
            if line is None:
                raise CaptureFormatError("oversized", f"a line over {max_line} bytes")
            if not line.strip():
                counts["blank"] = counts.get("blank", 0) + 1
                continue
            record = parse_line(line, complete)
            probabilities = record.probabilities()
        except CaptureFormatError as error:
            counts[error.kind] = counts.get(error.kind, 0) + 1
            continue
        yield record, probabilities


def damaged(counts: dict[str, int]) -> int:
    """How many lines in `counts` were damaged, of any kind."""
    return sum(counts.get(kind, 0) for kind in DAMAGE_KINDS)
