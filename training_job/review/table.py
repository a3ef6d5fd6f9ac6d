"""The decisions table's key schema, in one place: what serverless.yml declares (partition
key `image`, the sparse `review-queue` index on `review_pending`/`queued_at`, the sparse
`answered` index on `review_reason`/`reviewed_at`, the sparse `unsent-events` outbox
index on `event_pending`/`decided_at`), written as CreateTable arguments for
the tests and the docs that make a table of their own. tests/test_serverless_yml.py holds
serverless.yml's DecisionsTable to it."""

from __future__ import annotations

from typing import Any

from contract.decisions import (
    ANSWERED_INDEX,
    ANSWERED_INDEX_PARTITION_KEY,
    ANSWERED_INDEX_PROJECTION,
    ANSWERED_INDEX_SORT_KEY,
    EVENT_OUTBOX_INDEX,
    EVENT_OUTBOX_SORT_KEY,
    EVENT_PENDING_ATTRIBUTE,
    PARTITION_KEY,
    REVIEW_INDEX,
    REVIEW_INDEX_PARTITION_KEY,
    REVIEW_INDEX_SORT_KEY,
)


def table_definition(name: str) -> dict[str, Any]:
    """`dynamodb.create_table(**table_definition(name))`: on-demand, encrypted, the queue
    index projecting every attribute (the review command reads each item again with a
    consistent GetItem anyway, so a KEYS_ONLY projection would work as well)."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": REVIEW_INDEX_PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": REVIEW_INDEX_SORT_KEY, "AttributeType": "S"},
            {"AttributeName": ANSWERED_INDEX_PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": ANSWERED_INDEX_SORT_KEY, "AttributeType": "S"},
            {"AttributeName": EVENT_PENDING_ATTRIBUTE, "AttributeType": "S"},
            {"AttributeName": EVENT_OUTBOX_SORT_KEY, "AttributeType": "S"},
        ],
        "KeySchema": [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": REVIEW_INDEX,
                "KeySchema": [
                    {"AttributeName": REVIEW_INDEX_PARTITION_KEY, "KeyType": "HASH"},
                    {"AttributeName": REVIEW_INDEX_SORT_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": ANSWERED_INDEX,
                "KeySchema": [
                    {"AttributeName": ANSWERED_INDEX_PARTITION_KEY, "KeyType": "HASH"},
                    {"AttributeName": ANSWERED_INDEX_SORT_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {
                    "ProjectionType": "INCLUDE",
                    "NonKeyAttributes": list(ANSWERED_INDEX_PROJECTION),
                },
            },
            {
                "IndexName": EVENT_OUTBOX_INDEX,
                "KeySchema": [
                    {"AttributeName": EVENT_PENDING_ATTRIBUTE, "KeyType": "HASH"},
                    {"AttributeName": EVENT_OUTBOX_SORT_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
        "SSESpecification": {"Enabled": True},
    }
