"""The AWS limits the workflow's decision depends on, as the local AWS holds them:
DynamoDB's 400 KB item and PutEvents' 256 KB of entries (docs/local-mode.md)."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def test_put_events_refuses_entries_of_256_kb_or_more(local_aws: dict[str, str]) -> None:
    events = boto3.client("events")
    entry = {"Source": "s", "DetailType": "d"}
    room = 256 * 1024 - 2 - len('{"x": ""}')
    fits = {**entry, "Detail": json.dumps({"x": "a" * (room - 1)})}
    assert events.put_events(Entries=[fits])["FailedEntryCount"] == 0
    for entries in ([{**entry, "Detail": json.dumps({"x": "a" * room})}], [fits, fits]):
        with pytest.raises(ClientError) as refused:
            events.put_events(Entries=entries)
        assert _code(refused) == "ValidationException"
        assert "over the limit" in str(refused.value)


def test_a_dynamodb_item_over_400_kb_is_refused(
    local_aws: dict[str, str], unique_name: str
) -> None:
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName=unique_name,
        AttributeDefinitions=[{"AttributeName": "image", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "image", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    key = {"image": {"S": "s3://b/k"}}
    dynamodb.put_item(TableName=unique_name, Item={**key, "label": {"S": "a" * 350_000}})
    with pytest.raises(ClientError) as refused:
        dynamodb.put_item(TableName=unique_name, Item={**key, "label": {"S": "a" * 410_000}})
    assert _code(refused) == "ValidationException"
    assert "Item size has exceeded the maximum allowed size" in str(refused.value)
