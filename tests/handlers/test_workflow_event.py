"""The workflow event, shared by the three handlers: parsing, image sniffing, logging."""

from __future__ import annotations

import json

import pytest

from contract import SHOWN_CHARACTERS, shown
from contract.images import MAX_IMAGE_BYTES
from handlers.workflow_event import (
    ConfigurationError,
    InvalidEvent,
    NotAnImage,
    WorkflowEvent,
    image_content_type,
    log,
    max_image_bytes,
)

REFERENCE_EVENT = {"image_data": "", "s3_bucket": "", "s3_key": "", "inferences": []}


def test_the_reference_event_parses_and_round_trips() -> None:
    event = WorkflowEvent.parse(REFERENCE_EVENT)
    assert event.response() == {"statusCode": 200, "body": REFERENCE_EVENT}


def test_a_previous_handlers_return_value_is_read_through_its_body() -> None:
    body = {"image_data": "aGk=", "s3_bucket": "b", "s3_key": "test/x.png", "inferences": [0.5]}
    event = WorkflowEvent.parse({"statusCode": 200, "body": body})
    assert event.response()["body"] == body


def test_missing_fields_take_the_reference_defaults() -> None:
    assert WorkflowEvent.parse({"s3_key": "test/a.png"}).response()["body"] == {
        **REFERENCE_EVENT,
        "s3_key": "test/a.png",
    }


@pytest.mark.parametrize("event", [None, [], "text", 3, b"bytes"])
def test_an_event_that_is_not_an_object_is_refused(event: object) -> None:
    with pytest.raises(InvalidEvent, match="JSON object"):
        WorkflowEvent.parse(event)


@pytest.mark.parametrize(
    "event",
    [
        {"s3_key": 5},
        {"s3_bucket": ["b"]},
        {"image_data": {"nested": True}},
        {"inferences": "0.9"},
    ],
)
def test_fields_of_the_wrong_type_are_refused(event: dict[str, object]) -> None:
    with pytest.raises(InvalidEvent, match="must be a"):
        WorkflowEvent.parse(event)


@pytest.mark.parametrize("inferences", [[True, 0.0], [1.5], [-0.1], ["0.9"], [None]])
def test_inferences_must_be_probabilities(inferences: list[object]) -> None:
    with pytest.raises(InvalidEvent, match="inferences"):
        WorkflowEvent.parse({"inferences": inferences})


def test_a_key_longer_than_s3_allows_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="1024"):
        WorkflowEvent.parse({"s3_key": "test/" + "a" * 1024})


def test_the_top_inference_names_the_label() -> None:
    assert WorkflowEvent(inferences=[0.2, 0.8]).top_inference() == ("motorcycle", 0.8)
    assert WorkflowEvent(inferences=[0.1, 0.1, 0.8]).top_inference() == ("2", 0.8)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg"),
    ],
)
def test_images_are_recognised_by_their_magic_bytes(data: bytes, content_type: str) -> None:
    assert image_content_type(data, "upload") == content_type


@pytest.mark.parametrize(
    "data",
    [
        # The endpoint refuses these, so the handlers must too: one list (contract.images).
        b"GIF89a....",
        b"BM....",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"",
        b"%PDF-1.7",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
    ],
)
def test_anything_else_is_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImage, match="upload is not a PNG or JPEG image"):
        image_content_type(data, "upload")


def test_the_real_images_are_recognised(png_image: bytes, jpeg_image: bytes) -> None:
    assert image_content_type(png_image, "a") == "image/png"
    assert image_content_type(jpeg_image, "a") == "image/jpeg"


def test_max_image_bytes_defaults_to_5_mb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAX_IMAGE_BYTES", raising=False)
    assert max_image_bytes() == 5 * 1024 * 1024
    monkeypatch.setenv("MAX_IMAGE_BYTES", "1000")
    assert max_image_bytes() == 1000


@pytest.mark.parametrize("value", ["lots", "1.5", "0", "-3", "1e9", str(MAX_IMAGE_BYTES + 1)])
def test_a_malformed_max_image_bytes_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MAX_IMAGE_BYTES", value)
    with pytest.raises(ConfigurationError, match="MAX_IMAGE_BYTES"):
        max_image_bytes()


def test_log_writes_one_json_object_per_line_with_the_request_id(
    capsys: pytest.CaptureFixture[str], lambda_context: object
) -> None:
    log("INFO", "image classified", lambda_context, s3_key="test/a.png", label="bicycle", x=None)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "INFO"
    assert record["message"] == "image classified"
    assert record["request_id"] == "c0ffee00-0000-4000-8000-000000000001"
    assert record["function"] == "scones-unlimited-test-handler"
    assert record["s3_key"] == "test/a.png"
    assert record["label"] == "bicycle"
    assert "x" not in record


def test_shown_bounds_what_an_error_repeats() -> None:
    assert shown("test/a.png") == "'test/a.png'"
    long = shown("k" * 100_000)
    assert len(long) < SHOWN_CHARACTERS + 40
    assert long.endswith("(100000 characters)")
