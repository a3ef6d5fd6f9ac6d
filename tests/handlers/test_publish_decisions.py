"""publishDecisions against the local AWS: the outbox sweep over a decisions table as the
workflow leaves it when a run stopped between the decision and its event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from contract.decisions import EVENT_DETAIL_TYPE, EVENT_PENDING_ATTRIBUTE, EVENT_SOURCE
from handlers import aws_clients, publish_decisions
from handlers.errors import ConfigurationError
from tests.decisions_table import create_decisions_table


@pytest.fixture
def table(
    local_aws: dict[str, str], unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    create_decisions_table(unique_name)
    monkeypatch.setenv("DECISIONS_TABLE", unique_name)
    monkeypatch.delenv("SETTLE_SECONDS", raising=False)
    monkeypatch.setattr(aws_clients, "_clients", {})
    yield unique_name


@pytest.fixture
def received(local_aws: dict[str, str], unique_name: str) -> Iterator[Any]:
    """The decision events on the default bus, as a routing system's queue receives them."""
    sqs, events = boto3.client("sqs"), boto3.client("events")
    queue = sqs.create_queue(QueueName=unique_name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name=unique_name,
        EventPattern=json.dumps({"source": [EVENT_SOURCE], "detail-type": [EVENT_DETAIL_TYPE]}),
    )
    events.put_targets(Rule=unique_name, Targets=[{"Id": "queue", "Arn": arn}])

    def details() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(message["Body"])["detail"] for message in messages]

    try:
        yield details
    finally:
        events.remove_targets(Rule=unique_name, Ids=["queue"])
        events.delete_rule(Name=unique_name)


def pending_item(image: str, minutes_ago: float, **changes: str) -> dict[str, Any]:
    decided_at = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat(
        timespec="milliseconds"
    )
    item = {
        "image": {"S": image},
        "label": {"S": "motorcycle"},
        "confidence": {"N": "0.97"},
        "inferences": {"L": [{"N": "0.03"}, {"N": "0.97"}]},
        "model_version": {"S": "4"},
        "endpoint": {"S": "scones-image-classifier"},
        "variant": {"S": "v4"},
        "decided_at": {"S": decided_at},
        "execution": {"S": f"arn:aws:states:us-east-1:123456789012:execution:wf:{image[-6:]}"},
        "status": {"S": "routed"},
        "source": {"S": "model"},
        "revision": {"N": "0"},
        EVENT_PENDING_ATTRIBUTE: {"S": "pending"},
    }
    item.update({name: {"S": value} for name, value in changes.items()})
    return item


def test_a_settled_pending_decision_is_announced_once_and_unmarked(
    table: str, received: Any
) -> None:
    """Every routed decision reaches the bus (issue 21, item 7): the sweep puts the event
    PublishDecision would have put, and clears the outbox mark, so a second sweep is quiet.
    A decision pending for less than SETTLE_SECONDS belongs to a run still going: left."""
    dynamodb = boto3.client("dynamodb")
    settled = pending_item("s3://b/incoming/a.png#" + "a" * 32, minutes_ago=10)
    running = pending_item("s3://b/incoming/b.png#" + "b" * 32, minutes_ago=0.1)
    for item in (settled, running):
        dynamodb.put_item(TableName=table, Item=item)
    assert publish_decisions.handler({}, None) == {"pending": 1, "published": 1}
    [detail] = received()
    assert detail == {
        "image": settled["image"]["S"],
        "label": "motorcycle",
        "confidence": 0.97,
        "model_version": "4",
        "endpoint": "scones-image-classifier",
        "variant": "v4",
        "decided_at": settled["decided_at"]["S"],
        "execution": settled["execution"]["S"],
        "source": "model",
        "status": "routed",
    }
    stored = dynamodb.get_item(TableName=table, Key={"image": settled["image"]})["Item"]
    assert EVENT_PENDING_ATTRIBUTE not in stored
    assert publish_decisions.handler({}, None) == {"pending": 0, "published": 0}
    assert received() == []


def test_a_decision_a_person_answered_meanwhile_gets_no_model_event(
    table: str, received: Any
) -> None:
    """The review command put the person's event; the model's, older, would contradict it."""
    dynamodb = boto3.client("dynamodb")
    answered = pending_item(
        "s3://b/incoming/c.png#" + "c" * 32,
        minutes_ago=10,
        status="reviewed",
        source="person",
        label="bicycle",
    )
    dynamodb.put_item(TableName=table, Item=answered)
    publish_decisions.handler({}, None)
    assert received() == []
    stored = dynamodb.get_item(TableName=table, Key={"image": answered["image"]})["Item"]
    assert EVENT_PENDING_ATTRIBUTE not in stored


def test_without_a_table_or_with_a_bad_settle_time_it_names_the_setting(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SETTLE_SECONDS", "soon")
    with pytest.raises(ConfigurationError, match="SETTLE_SECONDS"):
        publish_decisions.handler({}, None)
    monkeypatch.delenv("DECISIONS_TABLE")
    with pytest.raises(ConfigurationError, match="DECISIONS_TABLE"):
        publish_decisions.handler({}, None)
