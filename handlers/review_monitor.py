"""reviewMonitor: the review queue and the audit sample, as CloudWatch metrics.

Scheduled (serverless.yml). Each run publishes, with the dimension DecisionsTable=<table>:
- ReviewQueueDepth: photos waiting for a person (a COUNT Query of the sparse review-queue
  index, every page: a COUNT Query still stops at 1 MB read per page);
- OldestReviewWaitSeconds: how long the oldest of them has waited (the index's first item
  by its sort key, queued_at), 0 when none waits, so the alarm clears;
- AuditedAnswers: the audit answers given in the last AUDIT_WINDOW_HOURS (a Query of the
  answered index: review_reason = audit, reviewed_at in the window);
- AccuracyPastGate (and AccuracyPastGateLow, its Wilson 95% lower bound): the share of
  those answers that confirm the model's label ("neither" counts as wrong:
  contract/review_quality.py), published only when at least MIN_AUDIT_SAMPLE answers back
  it. Under that, the interval is too wide for an alarm to mean anything (at 50 answers
  and 95% accuracy it is still about 87-98%), and the metric is left missing: the alarm
  treats missing data as not breaching. The same two metrics with a ModelVersion
  dimension too, per version with enough answers.

Reads only the two indexes (dynamodb:Query on their ARNs), never the table's items.

Environment:
  DECISIONS_TABLE      the decisions table (contract/decisions.py)
  METRIC_NAMESPACE     default SconesUnlimited/Monitoring
  AUDIT_WINDOW_HOURS   how far back audit answers count (default 168: a week)
  MIN_AUDIT_SAMPLE     the fewest audit answers AccuracyPastGate is published from
                       (default contract.review_quality.MIN_AUDIT_SAMPLE, 50)
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

import boto3

from contract.decisions import (
    ANSWERED_INDEX,
    ANSWERED_INDEX_PARTITION_KEY,
    ANSWERED_INDEX_SORT_KEY,
    REASON_AUDIT,
    REVIEW_INDEX,
    REVIEW_INDEX_PARTITION_KEY,
    REVIEW_INDEX_SORT_KEY,
    REVIEW_PENDING,
    TABLE_ENVIRONMENT_VARIABLE,
)
from contract.review_quality import (
    ALL_VERSIONS,
    MIN_AUDIT_SAMPLE,
    from_attribute_values,
    measure,
)
from handlers.errors import ConfigurationError
from handlers.json_log import log

DEFAULT_NAMESPACE = "SconesUnlimited/Monitoring"
AUDIT_WINDOW_HOURS = 168
MAX_VERSIONS_PUBLISHED = 20  # per-version metrics for the newest this many only


def _setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default or "").strip()
    if not value:
        raise ConfigurationError(f"{name} is not set")
    return value


def _whole(name: str, default: int, low: int, high: int) -> int:
    text = _setting(name, str(default))
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigurationError(
            f"{name} must be a whole number {low} to {high}, got {text[:20]!r}"
        )
    return int(text)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def queue_depth(dynamodb: Any, table: str) -> int:
    pages = dynamodb.get_paginator("query").paginate(
        TableName=table,
        IndexName=REVIEW_INDEX,
        KeyConditionExpression="#pending = :pending",
        ExpressionAttributeNames={"#pending": REVIEW_INDEX_PARTITION_KEY},
        ExpressionAttributeValues={":pending": {"S": REVIEW_PENDING}},
        Select="COUNT",
    )
    return sum(int(page["Count"]) for page in pages)


def oldest_queued_at(dynamodb: Any, table: str) -> str | None:
    answer = dynamodb.query(
        TableName=table,
        IndexName=REVIEW_INDEX,
        KeyConditionExpression="#pending = :pending",
        ExpressionAttributeNames={"#pending": REVIEW_INDEX_PARTITION_KEY},
        ExpressionAttributeValues={":pending": {"S": REVIEW_PENDING}},
        ScanIndexForward=True,  # ascending queued_at: the oldest first
        Limit=1,
    )
    items = answer.get("Items", [])
    value = items[0].get(REVIEW_INDEX_SORT_KEY, {}).get("S") if items else None
    return value if isinstance(value, str) else None


def audit_answers(dynamodb: Any, table: str, since: str) -> list[dict[str, str]]:
    pages = dynamodb.get_paginator("query").paginate(
        TableName=table,
        IndexName=ANSWERED_INDEX,
        KeyConditionExpression="#reason = :audit AND #reviewed >= :since",
        ExpressionAttributeNames={
            "#reason": ANSWERED_INDEX_PARTITION_KEY,
            "#reviewed": ANSWERED_INDEX_SORT_KEY,
            "#label": "label",
            "#version": "model_version",
            "#answer": "answer",
            "#inferences": "inferences",
            "#source": "source",
        },
        ExpressionAttributeValues={":audit": {"S": REASON_AUDIT}, ":since": {"S": since}},
        # What the measures read (contract/review_quality.py): the model's own answer is
        # the best class of `inferences`, as a person's answer may have become `label`.
        ProjectionExpression="#reason, #label, #version, #answer, #inferences, #source",
    )
    return [from_attribute_values(item) for page in pages for item in page.get("Items", [])]


def waited_seconds(queued_at: str, now: float) -> float | None:
    """Seconds since `queued_at` (ISO 8601, UTC when it names no zone), None if unreadable."""
    try:
        moment = datetime.fromisoformat(queued_at)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, now - moment.timestamp())


def metrics(
    table: str,
    depth: int,
    waited: float | None,
    answers: list[dict[str, str]],
    min_sample: int,
) -> list[dict[str, Any]]:
    dimensions = [{"Name": "DecisionsTable", "Value": table}]
    data: list[dict[str, Any]] = [
        {"MetricName": "ReviewQueueDepth", "Value": depth, "Unit": "Count"},
        {"MetricName": "AuditedAnswers", "Value": len(answers), "Unit": "Count"},
    ]
    if waited is not None:
        data.append({"MetricName": "OldestReviewWaitSeconds", "Value": waited, "Unit": "Seconds"})
    measured = measure(answers)
    versions = [v for v in measured if v != ALL_VERSIONS][-MAX_VERSIONS_PUBLISHED:]
    for version in [ALL_VERSIONS, *versions]:
        accuracy = measured[version].accuracy_past_gate
        if accuracy.n < min_sample or accuracy.interval is None:
            continue
        extra = [] if version == ALL_VERSIONS else [{"Name": "ModelVersion", "Value": version}]
        for name, value in (
            ("AccuracyPastGate", accuracy.value),
            ("AccuracyPastGateLow", accuracy.interval[0]),
        ):
            data.append(
                {
                    "MetricName": name,
                    "Value": value,
                    "Unit": "None",
                    "Dimensions": [*dimensions, *extra],
                }
            )
    for datum in data:
        datum.setdefault("Dimensions", dimensions)
    return data


def _metric_name(datum: dict[str, Any]) -> str:
    """ "AccuracyPastGate[3]" for model version 3's, the plain name for the others."""
    versions = [d["Value"] for d in datum["Dimensions"] if d["Name"] == "ModelVersion"]
    return datum["MetricName"] + "".join(f"[{v}]" for v in versions)


def handler(event: object, context: object = None) -> dict[str, Any]:
    table = _setting(TABLE_ENVIRONMENT_VARIABLE)
    namespace = _setting("METRIC_NAMESPACE", DEFAULT_NAMESPACE)
    window_hours = _whole("AUDIT_WINDOW_HOURS", AUDIT_WINDOW_HOURS, 1, 24 * 366)
    min_sample = _whole("MIN_AUDIT_SAMPLE", MIN_AUDIT_SAMPLE, 1, 1_000_000)
    dynamodb = boto3.client("dynamodb")
    now = time.time()

    depth = queue_depth(dynamodb, table)
    oldest = oldest_queued_at(dynamodb, table) if depth else None
    waited = 0.0 if oldest is None else waited_seconds(oldest, now)
    if oldest is not None and waited is None:
        log(
            "WARNING",
            "the oldest queued_at is not ISO 8601: age not published",
            context,
            queued_at=oldest[:64],
        )
    answers = audit_answers(dynamodb, table, _iso(now - window_hours * 3600))

    data = metrics(table, depth, waited, answers, min_sample)
    cloudwatch = boto3.client("cloudwatch")
    for start in range(0, len(data), 20):
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[start : start + 20])
    summary = {
        "table": table,
        "queue_depth": depth,
        "oldest_wait_seconds": waited,
        "audited_answers": len(answers),
        "min_audit_sample": min_sample,
        "metrics": {_metric_name(d): d["Value"] for d in data},
    }
    log("INFO", "published review metrics", context, **summary)
    return summary
