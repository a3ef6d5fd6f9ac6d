"""SageMaker Model Monitor capture records: the one module that writes and reads them.

An endpoint with data capture writes its sampled requests to
`s3://BUCKET/data_capture/<endpoint>/<variant>/YYYY/MM/DD/HH/<mm-ss-mmm>-<uuid>.jsonl`,
one JSON object a line, in the Model Monitor format that `contract/capture.py` shows.

SageMaker writes these on AWS; the local endpoint writes them with `build_record` and
`object_key`. Reading them is `contract.capture` (`parse_line`, `read_object`), one
standard-library reader that the monitor's Lambda packages too; its names are
re-exported here.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from contract.capture import EVENT_VERSION
from contract.capture import CapturedPayload as CapturedPayload
from contract.capture import CaptureFormatError as CaptureFormatError
from contract.capture import CaptureRecord as CaptureRecord
from contract.capture import parse_line as parse_line

CAPTURE_PREFIX = "data_capture"
DEFAULT_VARIANT = "AllTraffic"
# Payloads of these content types are stored as text (CaptureContentTypeHeader), the
# rest base64-encoded, as SageMaker does with the deploy command's capture settings.
JSON_CONTENT_TYPES = ("application/json",)
CSV_CONTENT_TYPES = ("text/csv",)


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
