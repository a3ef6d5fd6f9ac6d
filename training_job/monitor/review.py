"""The decisions table read for the review measures (contract/review_quality.py): what
`monitor review`, `monitor report --decisions-table` and the demo's summary show.

The operator's read is a Scan (every decision, for the doubtful share's denominator),
paginated, projecting only what the measures read and filtered on `decided_at` by DynamoDB.
The scheduled Lambda reads the answered index instead (handlers/review_monitor.py): the
same measures from the same function, over answered items only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
from tqdm import tqdm

from contract.review_quality import (
    ALL_VERSIONS,
    VersionMeasures,
    describe,
    from_attribute_values,
    measure,
)

# What the measures read (contract/review_quality.py), and decided_at for the period.
READ_ATTRIBUTES = (
    "label",
    "inferences",
    "source",
    "model_version",
    "review_reason",
    "answer",
    "decided_at",
)


def read_decisions(
    table: str,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Every decision in `table` decided in [since, until), as plain values."""
    names = {f"#a{number}": name for number, name in enumerate(READ_ATTRIBUTES)}
    request: dict[str, Any] = {
        "TableName": table,
        "ProjectionExpression": ", ".join(names),
        "ExpressionAttributeNames": names,
    }
    decided = next(key for key, name in names.items() if name == "decided_at")
    conditions, values = [], {}
    if since is not None:
        conditions.append(f"{decided} >= :since")
        values[":since"] = {"S": _utc_text(since)}
    if until is not None:
        conditions.append(f"{decided} < :until")
        values[":until"] = {"S": _utc_text(until)}
    if conditions:
        request["FilterExpression"] = " AND ".join(conditions)
        request["ExpressionAttributeValues"] = values
    pages = boto3.client("dynamodb").get_paginator("scan").paginate(**request)
    with tqdm(desc="decisions", unit="item", disable=not progress) as bar:
        for page in pages:
            items = page.get("Items", [])
            bar.update(len(items))
            for item in items:
                yield from_attribute_values(item)


def _utc_text(moment: datetime) -> str:
    """`moment` as decided_at is written (ISO 8601 UTC), to the second, compared as text;
    a time without a zone is UTC (as the monitor's --since reads it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def review_measures(
    table: str,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: bool = True,
) -> dict[str, VersionMeasures]:
    """The review measures per model version (and ALL_VERSIONS) of the table's decisions."""
    return measure(read_decisions(table, since, until, progress))


def summary_lines(measured: dict[str, VersionMeasures]) -> list[str]:
    """One line per model version, then all versions together when there are several."""
    versions = [v for v in measured if v != ALL_VERSIONS]
    if not versions:
        return ["no decisions in the table for this period"]
    lines = [f"model version {v}: {describe(measured[v])}" for v in versions]
    if len(versions) > 1:
        lines.append(f"all versions: {describe(measured[ALL_VERSIONS])}")
    return lines


def as_dict(measured: dict[str, VersionMeasures]) -> dict[str, Any]:
    return {version: m.as_dict() for version, m in measured.items()}
