"""A decisions table in the local AWS, with items as the workflow and the review page write
them (contract/decisions.py), for the tests of what reads it (the monitors).

`create_decisions_table` makes it as serverless.yml declares it
(training_job/review/table.py); `simulate` plays a model version's traffic: each photo
decided with a confidence, stopped at the gate below the threshold, passed photos sampled
for audit at the audit rate,
and a share of the queued photos answered by a person (with a chosen accuracy), the rest
still waiting in the queue.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3

from contract.decisions import (
    ANSWER_NEITHER,
    CLASSES,
    DEFAULT_AUDIT_RATE,
    REASON_AUDIT,
    REASON_DOUBTFUL,
    REVIEW_INDEX_PARTITION_KEY,
    REVIEW_INDEX_SORT_KEY,
    REVIEW_PENDING,
    SOURCE_MODEL,
    SOURCE_PERSON,
    STATUS_NEEDS_REVIEW,
    STATUS_REVIEWED,
    STATUS_ROUTED,
    image_id,
    variant_for_version,
)
from training_job.review.table import table_definition


def create_decisions_table(name: str) -> None:
    boto3.client("dynamodb").create_table(**table_definition(name))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Traffic:
    """One model version's photos: how the model and the people behave."""

    version: str
    photos: int
    start: datetime
    accuracy: float = 0.97  # of the model's label on passed photos, as people judge it
    doubtful_share: float = 0.1
    doubtful_agreement: float = 0.7
    neither_share: float = 0.01  # of all answers: photos of neither class
    answered_share: float = 1.0  # of queued photos, answered by now
    audit_rate: float = DEFAULT_AUDIT_RATE
    threshold: float = 0.93
    seconds_between_photos: float = 60.0


def simulate(traffic: Traffic, seed: int = 0) -> list[dict[str, Any]]:
    """The items the workflow and the reviewers would have left in the table."""
    rng = random.Random(seed)
    items = []
    for number in range(traffic.photos):
        decided = traffic.start + timedelta(seconds=number * traffic.seconds_between_photos)
        label = rng.choice(CLASSES)
        doubtful = rng.random() < traffic.doubtful_share
        low, high = (0.5, traffic.threshold) if doubtful else (traffic.threshold, 1.0)
        confidence = round(rng.uniform(low, high - 1e-6), 6)
        other = CLASSES[1 - CLASSES.index(label)]
        item: dict[str, Any] = {
            "image": image_id("scones-test", f"incoming/{traffic.version}-{number:06d}.png"),
            "label": label,
            "confidence": Decimal(str(confidence)),
            "inferences": [
                Decimal(str(confidence)) if c == label else Decimal(str(round(1 - confidence, 6)))
                for c in CLASSES
            ],
            "model_version": traffic.version,
            "endpoint": "scones-image-classifier",
            "variant": variant_for_version(int(traffic.version))
            if traffic.version.isdigit()
            else traffic.version,
            "decided_at": _iso(decided),
            "execution": f"arn:aws:states:us-east-1:123456789012:execution:wf:{number}",
            "status": STATUS_ROUTED,
            "source": SOURCE_MODEL,
            "revision": 0,
        }
        audited = not doubtful and rng.random() < traffic.audit_rate
        if doubtful or audited:
            item["review_reason"] = REASON_DOUBTFUL if doubtful else REASON_AUDIT
            item["status"] = STATUS_NEEDS_REVIEW if doubtful else STATUS_ROUTED
            if rng.random() < traffic.answered_share:
                right = rng.random() < (
                    traffic.doubtful_agreement if doubtful else traffic.accuracy
                )
                neither = not right and rng.random() < traffic.neither_share / max(
                    1e-9, 1 - (traffic.doubtful_agreement if doubtful else traffic.accuracy)
                )
                answer = label if right else ANSWER_NEITHER if neither else other
                item.update(
                    answer=answer,
                    reviewer="reviewer@example.com",
                    reviewed_at=_iso(decided + timedelta(minutes=30)),
                    status=STATUS_REVIEWED,
                    source=SOURCE_PERSON,  # who set `label` last: the answer becomes it
                    label=label if answer == ANSWER_NEITHER else answer,
                    revision=1,
                )
            else:
                item[REVIEW_INDEX_PARTITION_KEY] = REVIEW_PENDING
                item[REVIEW_INDEX_SORT_KEY] = _iso(decided)
        items.append(item)
    return items


def put_items(table: str, items: list[dict[str, Any]]) -> None:
    with boto3.resource("dynamodb").Table(table).batch_writer() as batch:
        for item in items:
            batch.put_item(Item=item)
