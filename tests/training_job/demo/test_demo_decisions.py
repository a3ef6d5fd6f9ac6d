"""The demo's summary line on decisions, read from a decisions table in the local AWS."""

from __future__ import annotations

import boto3

from training_job.demo.summary import decision_counts, describe_decisions


def test_decisions_are_counted_by_status_audit_and_queue(
    local_aws: dict[str, str], unique_name: str
) -> None:
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName=unique_name,
        AttributeDefinitions=[{"AttributeName": "image", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "image", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    items = [
        {"status": "routed"},
        {"status": "routed", "review_reason": "audit", "review_pending": "pending"},
        {"status": "needs_review", "review_reason": "doubtful", "review_pending": "pending"},
        {"status": "reviewed", "review_reason": "doubtful"},
    ]
    for n, item in enumerate(items):
        attributes = {name: {"S": value} for name, value in item.items()}
        dynamodb.put_item(TableName=unique_name, Item={"image": {"S": f"s3://b/{n}"}, **attributes})
    counts = decision_counts(unique_name)
    assert counts == {
        "routed": 2,
        "needs_review": 1,
        "reviewed": 1,
        "audited": 1,
        "review_queue": 2,
    }
    assert (
        describe_decisions(counts) == "2 routed (1 audited), 1 need review; 2 in the review queue"
    )
