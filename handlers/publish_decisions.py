"""publishDecisions: put the routing event of every decision whose event never went out.

The workflow writes a routed decision with `event_pending` (contract/decisions.py's outbox
attribute), puts its event, then clears the mark. A run that stopped in between (PutEvents
kept failing, the execution was stopped or timed out) leaves the decision pending; this
function, on a schedule, finds those in the sparse index EVENT_OUTBOX_INDEX (only pending
items are in it) and puts each event, then clears its mark. Only decisions pending longer
than SETTLE_SECONDS are taken, so a run still between its two writes is left to finish.

Delivery is at least once: an event put here whose mark could not be cleared is put again
on the next run (consumers deduplicate by the detail's `image` and `execution`). A
decision a person answered meanwhile gets no model event: the review command put the
person's (docs/events.md); its mark is only cleared.

Environment: DECISIONS_TABLE (the table), SETTLE_SECONDS (default 120).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from contract.aws_errors import error_code
from contract.decisions import (
    EVENT_DETAIL_TYPE,
    EVENT_FIELDS,
    EVENT_OUTBOX_INDEX,
    EVENT_PENDING,
    EVENT_PENDING_ATTRIBUTE,
    EVENT_SOURCE,
    SOURCE_MODEL,
    STATUS_ROUTED,
    TABLE_ENVIRONMENT_VARIABLE,
)
from handlers.aws_clients import aws_client
from handlers.errors import ConfigurationError, WorkflowError
from handlers.json_log import log

DEFAULT_SETTLE_SECONDS = 120
PUT_EVENTS_BATCH = 10  # PutEvents' most entries per request


class EventsNotSent(WorkflowError):
    """EventBridge refused some events; their decisions stay pending for the next run."""


def handler(event: object, context: object = None) -> dict[str, int]:
    table = os.environ.get(TABLE_ENVIRONMENT_VARIABLE, "").strip()
    if not table:
        raise ConfigurationError(f"{TABLE_ENVIRONMENT_VARIABLE} is not set")
    # In decided_at's own form (classify's: ISO 8601 UTC, milliseconds), so strings compare
    # as the times do.
    settled_before = (datetime.now(UTC) - timedelta(seconds=settle_seconds())).isoformat(
        timespec="milliseconds"
    )
    pending = list(pending_decisions(table, settled_before))
    failed = 0
    for start in range(0, len(pending), PUT_EVENTS_BATCH):
        batch = pending[start : start + PUT_EVENTS_BATCH]
        announced = [item for item in batch if needs_model_event(item)]
        refused = put_events(announced)
        failed += len(refused)
        for item in batch:
            if item["image"]["S"] not in refused:
                clear_mark(table, item)
    log("INFO", "pending decisions published", context, pending=len(pending), failed=failed)
    if failed:
        raise EventsNotSent(f"EventBridge refused {failed} of {len(pending)} events; kept pending")
    return {"pending": len(pending), "published": len(pending) - failed}


def settle_seconds() -> int:
    raw = os.environ.get("SETTLE_SECONDS", "").strip()
    if not raw:
        return DEFAULT_SETTLE_SECONDS
    if not raw.isdigit():
        raise ConfigurationError(f"SETTLE_SECONDS must be a whole number of seconds, got {raw!r}")
    return int(raw)


def pending_decisions(table: str, settled_before: str) -> Any:
    """Every pending decision decided before `settled_before` (ISO 8601 UTC)."""
    dynamodb = aws_client("dynamodb")
    query: dict[str, Any] = {
        "TableName": table,
        "IndexName": EVENT_OUTBOX_INDEX,
        "KeyConditionExpression": "#pending = :pending AND #decided_at < :before",
        "ExpressionAttributeNames": {
            "#pending": EVENT_PENDING_ATTRIBUTE,
            "#decided_at": "decided_at",
        },
        "ExpressionAttributeValues": {
            ":pending": {"S": EVENT_PENDING},
            ":before": {"S": settled_before},
        },
    }
    while True:
        page = dynamodb.query(**query)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def needs_model_event(item: dict[str, Any]) -> bool:
    """Whether the item still says what the model routed: a person's answer since has had
    its own event put by the review command."""
    return (
        item.get("source", {}).get("S") == SOURCE_MODEL
        and item.get("status", {}).get("S") == STATUS_ROUTED
    )


def event_detail(item: dict[str, Any]) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    for name in EVENT_FIELDS:
        value = item.get(name)
        if value is None:
            continue
        detail[name] = float(value["N"]) if "N" in value else value.get("S")
    return detail


def put_events(items: list[dict[str, Any]]) -> set[str]:
    """Put the items' events; the ids of those EventBridge refused."""
    if not items:
        return set()
    response = aws_client("events").put_events(
        Entries=[
            {
                "EventBusName": "default",
                "Source": EVENT_SOURCE,
                "DetailType": EVENT_DETAIL_TYPE,
                "Detail": json.dumps(event_detail(item)),
            }
            for item in items
        ]
    )
    # PutEvents answers one entry per entry sent, in order; a refused one has an ErrorCode.
    return {
        item["image"]["S"]
        for item, entry in zip(items, response.get("Entries", []), strict=True)
        if entry.get("ErrorCode")
    }


def clear_mark(table: str, item: dict[str, Any]) -> None:
    """Remove the item's outbox mark, unless it changed execution or is gone."""
    from botocore.exceptions import ClientError

    try:
        aws_client("dynamodb").update_item(
            TableName=table,
            Key={"image": item["image"]},
            UpdateExpression="REMOVE #pending",
            ConditionExpression="#execution = :execution",
            ExpressionAttributeNames={
                "#pending": EVENT_PENDING_ATTRIBUTE,
                "#execution": "execution",
            },
            ExpressionAttributeValues={":execution": item["execution"]},
            ReturnValues="NONE",
        )
    except ClientError as error:
        if error_code(error) != "ConditionalCheckFailedException":
            raise
