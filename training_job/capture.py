"""SageMaker Model Monitor capture records: the one module that writes and reads them.

An endpoint with data capture writes its sampled requests to
`s3://BUCKET/data_capture/<endpoint>/<variant>/YYYY/MM/DD/HH/<mm-ss-mmm>-<uuid>.jsonl`,
one JSON object a line:

    {"captureData": {
        "endpointInput": {"observedContentType": "image/png", "mode": "INPUT",
                          "data": "<base64>", "encoding": "BASE64"},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "data": "[0.97, 0.03]", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceId": "<caller's id, if sent>",
                       "inferenceTime": "2026-11-23T09:16:50Z"},
     "eventVersion": "0"}

SageMaker writes these on AWS; the local endpoint writes them with `build_record` and
`object_key`; monitoring reads them with `parse_line`.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CAPTURE_PREFIX = "data_capture"
DEFAULT_VARIANT = "AllTraffic"
# Payloads of these content types are stored as text (CaptureContentTypeHeader), the
# rest base64-encoded, as SageMaker does with the deploy command's capture settings.
JSON_CONTENT_TYPES = ("application/json",)
CSV_CONTENT_TYPES = ("text/csv",)
EVENT_VERSION = "0"


class CaptureFormatError(ValueError):
    """A line that is not a Model Monitor capture record."""


def destination_uri(bucket: str) -> str:
    """The DestinationS3Uri an endpoint configuration names for this project's bucket."""
    return f"s3://{bucket}/{CAPTURE_PREFIX}"


def _encoding(content_type: str) -> str:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in JSON_CONTENT_TYPES:
        return "JSON"
    if media_type in CSV_CONTENT_TYPES:
        return "CSV"
    return "BASE64"


def _payload(mode: str, content_type: str, body: bytes) -> dict[str, str]:
    encoding = _encoding(content_type)
    data = (
        base64.b64encode(body).decode("ascii")
        if encoding == "BASE64"
        else body.decode("utf-8", errors="replace")
    )
    return {"observedContentType": content_type, "mode": mode, "data": data, "encoding": encoding}


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC to the second, as SageMaker writes `inferenceTime`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_record(
    *,
    input_body: bytes,
    input_content_type: str,
    output_body: bytes,
    output_content_type: str,
    inference_time: datetime,
    inference_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """One capture record, field for field as SageMaker writes it."""
    metadata = {"eventId": event_id or str(uuid.uuid4())}
    if inference_id:
        metadata["inferenceId"] = inference_id
    metadata["inferenceTime"] = format_time(inference_time)
    return {
        "captureData": {
            "endpointInput": _payload("INPUT", input_content_type, input_body),
            "endpointOutput": _payload("OUTPUT", output_content_type, output_body),
        },
        "eventMetadata": metadata,
        "eventVersion": EVENT_VERSION,
    }


def encode_lines(records: list[dict[str, Any]]) -> bytes:
    """The body of one capture object: a JSON line per record."""
    return "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in records).encode()


def object_key(
    endpoint_name: str,
    written_at: datetime,
    variant: str = DEFAULT_VARIANT,
    prefix: str = CAPTURE_PREFIX,
    object_id: uuid.UUID | None = None,
) -> str:
    """`data_capture/<endpoint>/<variant>/YYYY/MM/DD/HH/<mm-ss-mmm>-<uuid>.jsonl`; a
    writer that may write the same records twice passes the same `object_id` each time,
    so the second write replaces the first instead of duplicating it."""
    moment = written_at.astimezone(UTC)
    return (
        f"{prefix}/{endpoint_name}/{variant}/{moment:%Y/%m/%d/%H}/"
        f"{moment:%M-%S}-{moment.microsecond // 1000:03d}-{object_id or uuid.uuid4()}.jsonl"
    )


def hour_prefix(endpoint_name: str, moment: datetime, variant: str = DEFAULT_VARIANT) -> str:
    """The folder holding the records captured in `moment`'s hour."""
    return f"{CAPTURE_PREFIX}/{endpoint_name}/{variant}/{moment.astimezone(UTC):%Y/%m/%d/%H}/"


@dataclass(frozen=True)
class CapturedPayload:
    content_type: str
    encoding: str
    data: str  # as stored: base64 text for BASE64, the text itself otherwise

    def body(self) -> bytes:
        """The bytes the endpoint received or sent."""
        if self.encoding == "BASE64":
            return base64.b64decode(self.data, validate=True)
        return self.data.encode("utf-8")


@dataclass(frozen=True)
class CaptureRecord:
    event_id: str
    inference_id: str | None
    inference_time: datetime
    input: CapturedPayload
    output: CapturedPayload


def _parse_payload(section: Any, mode: str) -> CapturedPayload:
    if not isinstance(section, dict):
        raise CaptureFormatError(f"endpoint{mode.title()} is not an object")
    if section.get("mode") != mode:
        raise CaptureFormatError(f"expected mode {mode!r}, got {section.get('mode')!r}")
    fields = {name: section.get(name) for name in ("observedContentType", "encoding", "data")}
    for name, value in fields.items():
        if not isinstance(value, str):
            raise CaptureFormatError(f"{mode} {name} is missing or not a string")
    payload = CapturedPayload(
        content_type=str(fields["observedContentType"]),
        encoding=str(fields["encoding"]),
        data=str(fields["data"]),
    )
    if payload.encoding not in ("BASE64", "JSON", "CSV"):
        raise CaptureFormatError(f"{mode} has unknown encoding {payload.encoding!r}")
    if payload.encoding == "BASE64":
        try:
            payload.body()
        except (binascii.Error, ValueError) as error:
            raise CaptureFormatError(f"{mode} data is not valid base64") from error
    return payload


def parse_line(line: str | bytes) -> CaptureRecord:
    """One line of a capture object to a record, or CaptureFormatError saying what is wrong."""
    try:
        document = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CaptureFormatError(f"not JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("captureData"), dict):
        raise CaptureFormatError("no captureData object")
    if document.get("eventVersion") != EVENT_VERSION:
        raise CaptureFormatError(f"unknown eventVersion {document.get('eventVersion')!r}")
    metadata = document.get("eventMetadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("eventId"), str):
        raise CaptureFormatError("eventMetadata.eventId is missing")
    try:
        # SageMaker writes whole seconds ("...T09:05:07Z"); fractions are accepted too.
        inference_time = datetime.fromisoformat(str(metadata.get("inferenceTime")))
    except ValueError as error:
        raise CaptureFormatError("eventMetadata.inferenceTime is not ISO-8601") from error
    if inference_time.utcoffset() is None:
        raise CaptureFormatError("eventMetadata.inferenceTime has no time zone (ISO-8601 UTC)")
    inference_id = metadata.get("inferenceId")
    capture = document["captureData"]
    return CaptureRecord(
        event_id=metadata["eventId"],
        inference_id=inference_id if isinstance(inference_id, str) else None,
        inference_time=inference_time.astimezone(UTC),
        input=_parse_payload(capture.get("endpointInput"), "INPUT"),
        output=_parse_payload(capture.get("endpointOutput"), "OUTPUT"),
    )
