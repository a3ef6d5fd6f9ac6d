"""The workflow event, shared by the workflow's handlers: parsing and answering."""

from __future__ import annotations

import pytest

from contract import SHOWN_CHARACTERS, shown
from handlers.errors import InvalidEvent
from handlers.workflow_event import WorkflowEvent

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


def test_shown_bounds_what_an_error_repeats() -> None:
    assert shown("test/a.png") == "'test/a.png'"
    long = shown("k" * 100_000)
    assert len(long) < SHOWN_CHARACTERS + 40
    assert long.endswith("(100000 characters)")
