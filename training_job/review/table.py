"""The decisions table's key schema, in one place: what serverless.yml declares (partition
key `image`, the sparse `review-queue` index on `review_pending`/`queued_at`), written as
CreateTable arguments for the tests and the docs that make a table of their own."""

from __future__ import annotations

from typing import Any

from contract.decisions import (
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
            }
        ],
        "SSESpecification": {"Enabled": True},
    }
