"""Capture records: built field for field as SageMaker writes them, and parsed back."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from training_job.serving import capture

MOMENT = datetime(2026, 11, 23, 9, 5, 7, 123456, tzinfo=UTC)


def record(inference_id: str | None = None) -> dict[str, Any]:
    return capture.build_record(
        input_body=b"\x89PNG fake bytes",
        input_content_type="image/png",
        output_body=b"[0.973, 0.027]",
        output_content_type="application/json",
        inference_time=MOMENT,
        inference_id=inference_id,
        event_id="4651a1bf-4b00-4248-a309-4a18b11e4277",
    )


def test_record_has_the_model_monitor_fields_and_nothing_else() -> None:
    assert record() == {
        "captureData": {
            "endpointInput": {
                "observedContentType": "image/png",
                "mode": "INPUT",
                "data": base64.b64encode(b"\x89PNG fake bytes").decode(),
                "encoding": "BASE64",
            },
            "endpointOutput": {
                "observedContentType": "application/json",
                "mode": "OUTPUT",
                "data": "[0.973, 0.027]",
                "encoding": "JSON",
            },
        },
        "eventMetadata": {
            "eventId": "4651a1bf-4b00-4248-a309-4a18b11e4277",
            "inferenceTime": "2026-11-23T09:05:07Z",
        },
        "eventVersion": "0",
    }


def test_inference_id_is_recorded_only_when_the_caller_sent_one() -> None:
    assert record("order-17")["eventMetadata"]["inferenceId"] == "order-17"
    assert "inferenceId" not in record()["eventMetadata"]


def test_lines_parse_back_to_the_bytes_and_json_that_were_captured() -> None:
    body = capture.encode_lines([record("a"), record()])
    lines = body.decode().splitlines()
    assert len(lines) == 2 and body.endswith(b"\n")
    parsed = capture.parse_line(lines[0])
    assert parsed.inference_id == "a"
    assert parsed.inference_time == MOMENT.replace(microsecond=0)
    assert parsed.input.content_type == "image/png"
    assert parsed.input.body() == b"\x89PNG fake bytes"
    assert json.loads(parsed.output.body()) == [0.973, 0.027]
    assert capture.parse_line(lines[1]).inference_id is None


def test_object_key_follows_the_sagemaker_layout() -> None:
    key = capture.object_key("scones-image-classifier", MOMENT)
    assert re.fullmatch(
        r"data_capture/scones-image-classifier/AllTraffic/2026/11/23/09/"
        r"05-07-123-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.jsonl",
        key,
    )
    assert key.startswith(capture.hour_prefix("scones-image-classifier", MOMENT))
    assert capture.destination_uri("bucket") == "s3://bucket/data_capture"


def _mutated(change: Callable[[dict[str, Any]], object]) -> str:
    document = record()
    change(document)
    return json.dumps(document)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("", "not JSON"),
        ("{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[]", "captureData"),
        ('{"captureData": 1}', "captureData"),
        (_mutated(lambda d: d.update(eventVersion="1")), "eventVersion"),
        (_mutated(lambda d: d.pop("eventMetadata")), "eventId"),
        (_mutated(lambda d: d["eventMetadata"].update(inferenceTime="yesterday")), "ISO-8601"),
        (
            _mutated(lambda d: d["eventMetadata"].update(inferenceTime="2026-11-23T09:05:07")),
            "zone",
        ),
        (_mutated(lambda d: d["captureData"].pop("endpointOutput")), "not an object"),
        (
            _mutated(lambda d: d["captureData"]["endpointInput"].update(mode="OUTPUT")),
            "expected mode",
        ),
        (
            _mutated(lambda d: d["captureData"]["endpointInput"].update(data="***")),
            "base64",
        ),
        (
            _mutated(lambda d: d["captureData"]["endpointInput"].update(encoding="ROT13")),
            "unknown encoding",
        ),
        (
            _mutated(lambda d: d["captureData"]["endpointInput"].pop("observedContentType")),
            "observedContentType",
        ),
    ],
)
def test_malformed_lines_raise_a_format_error_that_says_what_is_wrong(
    line: str | bytes, complaint: str
) -> None:
    with pytest.raises(capture.CaptureFormatError, match=complaint):
        capture.parse_line(line)
