"""The review queue in the decisions table (contract/decisions.py), for the review page.

Every answer and undo is an UpdateItem conditional on the `revision` the reviewer saw, so
of two reviewers answering the same photo exactly one wins; the other gets `Conflict`
with the fresh item. An answer sets the decision's `label` to the person's answer with
`source` "person", takes the photo out of the queue (removes `review_pending`), emits the
decision event with that source, and records the answer as training data
(training_job/review/reviewed.py). An undo, allowed only to the reviewer who answered
and only while nobody wrote after, puts the model's decision back (its best class is the
largest of `inferences`, in LABELS order), returns the photo to its place in the queue
(`queued_at` is kept), emits a `withdrawn` event (source "person", label the answer taken
back: never a second model event, which a routing system would read as routing), and
drops the line.

An answer that contradicts a confident model (training_job/review/agreement.py) is held
instead: the item keeps its place in the queue with `first_answer` and `first_reviewer`,
nothing else changes, and the next answer, by another reviewer, decides; the photo
becomes training data only if the two people agree. A reviewer is not shown the photos
they answered first.

DynamoDB is the truth: the table is written first; the event and the manifest follow it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from contract import shown
from contract.aws_errors import error_code
from contract.decisions import (
    ANSWERS,
    CLASSES,
    EVENT_DETAIL_TYPE,
    EVENT_FIELDS,
    EVENT_SOURCE,
    EVENT_STATUS_WITHDRAWN,
    PARTITION_KEY,
    REASON_AUDIT,
    REVIEW_INDEX,
    REVIEW_INDEX_PARTITION_KEY,
    REVIEW_INDEX_SORT_KEY,
    REVIEW_PENDING,
    SOURCE_MODEL,
    SOURCE_PERSON,
    STATUS_NEEDS_REVIEW,
    STATUS_REVIEWED,
    STATUS_ROUTED,
    split_image_id,
)
from training_job.review.agreement import contradicts_model, training_answer
from training_job.review.reviewed import ReviewedManifest

# How many index entries one look for the next photo reads past before giving up on a
# page: entries whose item was answered a moment ago (the index is eventually consistent).
MAX_STALE_ENTRIES = 25

_PLACEHOLDER = re.compile(r"[#:][A-Za-z0-9_]+")
_deserializer = TypeDeserializer()
_serializer = TypeSerializer()


class NotFound(LookupError):
    """No decision for that photo."""


class Conflict(Exception):
    """The item changed since the reviewer saw it (or is not theirs to undo)."""

    def __init__(self, message: str, item: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.item = item


def plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item (typed) as JSON-ready values: numbers as int or float."""
    return {name: _plain(_deserializer.deserialize(value)) for name, value in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _typed(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in values.items()}


def split_image(image: str) -> tuple[str, str]:
    """(bucket, key) of a photo id (`s3://bucket/key#etag`, or an older one without the
    ETag); ValueError for anything else."""
    bucket, key, _etag = split_image_id(image)
    return bucket, key


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ReviewStore:
    """The queue of table `table`; photos and answers' training data in bucket `bucket`."""

    def __init__(self, dynamodb: Any, s3: Any, events: Any, table: str, bucket: str) -> None:
        self.dynamodb = dynamodb
        self.s3 = s3
        self.events = events
        self.table = table
        self.bucket = bucket
        self.manifest = ReviewedManifest(s3, bucket)

    # Reading the queue

    def next_pending(
        self, after: tuple[str, str] | None = None, reviewer: str | None = None
    ) -> dict[str, Any] | None:
        """The oldest photo waiting for a person, or the first after `after` (its
        (image, queued_at): skipping), wrapping round to the oldest; None when none waits.
        A photo `reviewer` answered first waits for someone else, so it is not theirs."""
        found = self._first_pending(after, reviewer)
        if found is None and after is not None:
            found = self._first_pending(None, reviewer)
        return found

    def _first_pending(
        self, after: tuple[str, str] | None, reviewer: str | None
    ) -> dict[str, Any] | None:
        query: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": REVIEW_INDEX,
            "KeyConditionExpression": "#pending = :pending",
            "ExpressionAttributeNames": {"#pending": REVIEW_INDEX_PARTITION_KEY},
            "ExpressionAttributeValues": {":pending": {"S": REVIEW_PENDING}},
            "Limit": MAX_STALE_ENTRIES,
        }
        if after is not None:
            image, queued_at = after
            query["ExclusiveStartKey"] = _typed(
                {
                    PARTITION_KEY: image,
                    REVIEW_INDEX_PARTITION_KEY: REVIEW_PENDING,
                    REVIEW_INDEX_SORT_KEY: queued_at,
                }
            )
        while True:
            page = self.dynamodb.query(**query)
            for entry in page.get("Items", []):
                item = self.get(entry[PARTITION_KEY]["S"])
                if (
                    item is not None
                    and item.get(REVIEW_INDEX_PARTITION_KEY) == REVIEW_PENDING
                    and (reviewer is None or item.get("first_reviewer") != reviewer)
                ):
                    return item
            if "LastEvaluatedKey" not in page:
                return None
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def count_pending(self) -> int:
        query: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": REVIEW_INDEX,
            "KeyConditionExpression": "#pending = :pending",
            "ExpressionAttributeNames": {"#pending": REVIEW_INDEX_PARTITION_KEY},
            "ExpressionAttributeValues": {":pending": {"S": REVIEW_PENDING}},
            "Select": "COUNT",
        }
        total = 0
        while True:
            page = self.dynamodb.query(**query)
            total += page["Count"]
            if "LastEvaluatedKey" not in page:
                return total
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get(self, image: str) -> dict[str, Any] | None:
        response = self.dynamodb.get_item(
            TableName=self.table, Key=_typed({PARTITION_KEY: image}), ConsistentRead=True
        )
        return plain(response["Item"]) if "Item" in response else None

    def image_bytes(self, image: str, limit: int) -> bytes:
        """The photo of a decision in this store's bucket, at most `limit` bytes."""
        if self.get(image) is None:
            raise NotFound(f"no decision for {shown(image, 200)}")
        bucket, key, etag = split_image_id(image)
        if bucket != self.bucket:
            raise NotFound(f"{shown(image, 200)} is not in the bucket s3://{self.bucket}")
        # Only the upload the decision is about: a key uploaded over since holds another photo.
        condition = {"IfMatch": f'"{etag}"'} if etag else {}
        try:
            response = self.s3.get_object(
                Bucket=bucket, Key=key, Range=f"bytes=0-{limit}", **condition
            )
        except ClientError as error:
            if error_code(error) not in ("PreconditionFailed", "412"):
                raise
            raise NotFound(
                f"{shown(image, 200)}: the key holds a later upload now; this photo is gone"
            ) from error
        data: bytes = response["Body"].read()
        if len(data) > limit:
            raise ValueError(f"{shown(image, 200)} is over {limit} bytes")
        return data

    # Writing

    def answer(self, image: str, answer: str, revision: int, reviewer: str) -> dict[str, Any]:
        """Answer the pending photo `image` as seen at `revision`; the updated item."""
        if answer not in ANSWERS:
            raise ValueError(f"unknown answer {shown(answer)}: one of {', '.join(ANSWERS)}")
        bucket, key, etag = split_image_id(image)
        if bucket != self.bucket:
            raise NotFound(f"{shown(image, 200)} is not in the bucket s3://{self.bucket}")
        current = self.get(image)
        if current is None:
            raise NotFound(f"no decision for {shown(image, 200)}")
        first = current.get("first_answer")
        if first is None and contradicts_model(current.get("inferences") or [], answer):
            return self._hold(image, answer, revision, reviewer)
        if first is not None and current.get("first_reviewer") == reviewer:
            raise Conflict(
                f"you answered {shown(image, 200)} first; another reviewer decides it", current
            )
        item = self._update(
            image,
            revision,
            "SET #status = :reviewed, #answer = :answer, #label = :answer, "
            "#reviewer = :reviewer, #reviewed_at = :at, #source = :person, "
            "#revision = if_not_exists(#revision, :zero) + :one REMOVE #pending",
            "attribute_exists(#pending)",
            {
                ":reviewed": STATUS_REVIEWED,
                ":answer": answer,
                ":reviewer": reviewer,
                ":at": now(),
                ":person": SOURCE_PERSON,
            },
        )
        self._emit(item)
        learned = training_answer(first, answer) if first is not None else answer
        if learned is not None:
            self.manifest.record(image, key, learned, etag)
        return item

    def _hold(self, image: str, answer: str, revision: int, reviewer: str) -> dict[str, Any]:
        """Keep `answer` as the first of two: the photo stays queued for another reviewer."""
        return self._update(
            image,
            revision,
            "SET #first_answer = :answer, #first_reviewer = :reviewer, "
            "#revision = if_not_exists(#revision, :zero) + :one",
            "attribute_exists(#pending) AND attribute_not_exists(#first_answer)",
            {":answer": answer, ":reviewer": reviewer},
        )

    def undo(self, image: str, revision: int, reviewer: str) -> dict[str, Any]:
        """Take back `reviewer`'s answer to `image`, seen at `revision`: the restored item."""
        current = self.get(image)
        if current is None:
            raise NotFound(f"no decision for {shown(image, 200)}")
        inferences = current.get("inferences") or []
        if len(inferences) != len(CLASSES) or REVIEW_INDEX_SORT_KEY not in current:
            raise Conflict(f"{shown(image, 200)} has no model decision to go back to", current)
        model_label = CLASSES[max(range(len(inferences)), key=inferences.__getitem__)]
        status = (
            STATUS_ROUTED if current.get("review_reason") == REASON_AUDIT else STATUS_NEEDS_REVIEW
        )
        item = self._update(
            image,
            revision,
            "SET #status = :status, #label = :label, #source = :model, #pending = :pending, "
            "#revision = if_not_exists(#revision, :zero) + :one "
            "REMOVE #answer, #reviewer, #reviewed_at",
            "#status = :reviewed AND #reviewer = :reviewer",
            {
                ":status": status,
                ":label": model_label,
                ":model": SOURCE_MODEL,
                ":pending": REVIEW_PENDING,
                ":reviewed": STATUS_REVIEWED,
                ":reviewer": reviewer,
            },
        )
        # What the routing system hears: this person's answer no longer holds. The item is
        # the model's decision again, which it heard (or, for a doubtful photo, never did).
        # `current` is the item the update replaced: the update required its revision.
        self._emit(
            {
                **item,
                "label": current["answer"],
                "source": SOURCE_PERSON,
                "status": EVENT_STATUS_WITHDRAWN,
            }
        )
        self.manifest.forget(image)
        return item

    def _update(
        self, image: str, revision: int, update: str, condition: str, values: dict[str, Any]
    ) -> dict[str, Any]:
        names = {
            f"#{name}": name
            for name in (
                "status",
                "answer",
                "label",
                "reviewer",
                "reviewed_at",
                "source",
                "revision",
                "first_answer",
                "first_reviewer",
            )
        }
        names["#pending"] = REVIEW_INDEX_PARTITION_KEY
        names["#image"] = PARTITION_KEY
        # An item the workflow wrote once has no revision yet: it is revision 0.
        seen = (
            "#revision = :seen"
            if revision
            else "(attribute_not_exists(#revision) OR #revision = :seen)"
        )
        expression = f"attribute_exists(#image) AND {seen} AND {condition}"
        values = {**values, ":seen": revision, ":zero": 0, ":one": 1}
        # DynamoDB refuses a placeholder the expressions do not use: pass only those used.
        tokens = set(_PLACEHOLDER.findall(update + " " + expression))
        try:
            response = self.dynamodb.update_item(
                TableName=self.table,
                Key=_typed({PARTITION_KEY: image}),
                UpdateExpression=update,
                ConditionExpression=expression,
                ExpressionAttributeNames={k: v for k, v in names.items() if k in tokens},
                ExpressionAttributeValues=_typed({k: v for k, v in values.items() if k in tokens}),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            fresh = self.get(image)
            if fresh is None:
                raise NotFound(f"no decision for {shown(image, 200)}") from error
            raise Conflict(_why_refused(fresh, revision), fresh) from error
        return plain(response["Attributes"])

    def _emit(self, item: Mapping[str, Any]) -> None:
        detail = {name: item[name] for name in EVENT_FIELDS if name in item}
        response = self.events.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": EVENT_DETAIL_TYPE,
                    "Detail": json.dumps(detail),
                    "EventBusName": "default",
                }
            ]
        )
        if response.get("FailedEntryCount"):
            entry = response["Entries"][0]
            raise EventNotSent(
                f"the decision of {shown(item['image'], 200)} was recorded, but EventBridge "
                f"refused its event: {entry.get('ErrorCode')}: {entry.get('ErrorMessage')}"
            )


class EventNotSent(RuntimeError):
    """EventBridge refused the decision's event (the table was written)."""


def _why_refused(fresh: Mapping[str, Any], revision: int) -> str:
    if fresh.get("revision", 0) != revision:
        who = f" by {fresh['reviewer']}" if fresh.get("reviewer") else ""
        latest = fresh.get("revision", 0)
        return f"the decision changed{who} since you saw it (revision {latest}, not {revision})"
    if fresh.get("status") == STATUS_REVIEWED:
        return f"already answered by {fresh.get('reviewer', 'someone')}"
    return "not waiting for review"
