"""backfill: score one batch of a backfill's photos and record their decisions.

The backfill's Distributed Map (statemachine/backfill.asl.yml) hands each child a batch
`{"Items": [S3 objects as ItemReader lists them], "BatchInput": {"bucket", "backfill",
"execution", "target_variant", "redecide"}}`. For each photo this handler does what the
live workflow's serialize, classify, threshold filter and decision writes do, with the
same code and the same rules:

- the photo is the listed version: its id carries the listed ETag, and it is read with
  If-Match on it (handlers/image_source.py: same prefixes, size limit, magic bytes);
- a photo that has a decision already is skipped before the endpoint is called (one
  BatchGetItem a batch), unless `redecide`; the write itself is conditional as the live
  path's (contract.decisions.FIRST_WRITE_CONDITION, `execution` = the backfill's
  execution), so a photo decided meanwhile, or by a backfill stopped and started again,
  keeps its one decision;
- the endpoint is called once per photo (its content types are single images), a few at
  once (ENDPOINT_CONCURRENCY) so one Lambda keeps an instance busy; `target_variant` is
  the chosen model version's variant (TargetVariant), else the endpoint's routing;
- the threshold and the audit sample are the filter's (handlers/threshold_filter.py):
  a confident photo is `routed`, a sampled one queued for review too, a doubtful one
  `needs_review`; an upload the handlers refuse is `rejected` with the error's name.
  A backfill puts no routing event: it scores an archive (docs/events.md).

It answers `{"photos": [one outcome per item]}` (contract/backfill.py), a failure named
per photo (`error`) rather than raised, so one unreadable photo never fails its batch.
It raises only when it cannot work at all (ConfigurationError, InvalidEvent, DynamoDB
refusing): the batch fails and the results file names its photos with that error.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from contract import backfill as contract
from contract import shown
from contract.aws_errors import error_code
from contract.decisions import (
    FIRST_WRITE_CONDITION,
    PARTITION_KEY,
    REASON_AUDIT,
    REASON_DOUBTFUL,
    REASON_UNFAMILIAR,
    REJECTION_REASONS,
    REVIEW_PENDING,
    SOURCE_MODEL,
    STATUS_NEEDS_REVIEW,
    STATUS_REJECTED,
    STATUS_ROUTED,
    TABLE_ENVIRONMENT_VARIABLE,
    image_id,
    version_of_variant,
)
from handlers.aws_clients import aws_client
from handlers.classify import (
    EndpointAnswer,
    EndpointUnavailable,
    configured_endpoint_name,
    configured_threshold,
    invoke,
)
from handlers.errors import ConfigurationError, InvalidEvent
from handlers.image_source import max_image_bytes, read_image
from handlers.json_log import log
from handlers.threshold_filter import configured_audit_rate, in_audit_sample
from handlers.workflow_event import LABELS, dynamodb_number

# Photos scored at once by one invocation: the endpoint's latency overlapped, and few
# enough that a 128 MB-class function is not CPU-bound on the requests.
ENDPOINT_CONCURRENCY = 8
# A transient endpoint error (throttled, not ready, no connection) is tried again inside
# the batch, with these waits, before the photo is named EndpointUnavailable.
ENDPOINT_RETRY_WAITS = (0.5, 2.0)
MAX_BATCH_ITEMS = 500  # far above the state machine's batches: a malformed batch is refused
BATCH_GET_KEYS = 100  # DynamoDB's BatchGetItem limit
BATCH_GET_ROUNDS = 5  # UnprocessedKeys asked for again at most this many times
DYNAMODB_CLIENT_CONFIG: dict[str, Any] = {
    "connect_timeout": 2,
    "read_timeout": 5,
    "retries": {"mode": "standard", "total_max_attempts": 3},
}


def handler(event: object, context: object = None) -> dict[str, Any]:
    table = os.environ.get(TABLE_ENVIRONMENT_VARIABLE, "").strip()
    if not table:
        raise ConfigurationError(f"{TABLE_ENVIRONMENT_VARIABLE} is not set")
    batch = Batch.parse(event)
    scorer = Scorer(
        table=table,
        endpoint=configured_endpoint_name(),
        threshold=configured_threshold(),
        audit_rate=configured_audit_rate(),
        limit=max_image_bytes(),
        batch=batch,
    )
    decided = scorer.decided_revisions([photo.image for photo in batch.photos])
    with ThreadPoolExecutor(max_workers=ENDPOINT_CONCURRENCY) as pool:
        outcomes = list(pool.map(lambda photo: scorer.score(photo, decided), batch.photos))
    counts = {name: sum(o["outcome"] == name for o in outcomes) for name in contract.OUTCOMES}
    log("INFO", "batch scored", context, backfill=batch.backfill, **counts)
    return {"photos": outcomes}


class Photo:
    def __init__(self, key: str, etag: str, image: str) -> None:
        self.key, self.etag, self.image = key, etag, image


class Batch:
    """The child's input, checked."""

    def __init__(
        self,
        bucket: str,
        photos: list[Photo],
        backfill: str,
        execution: str,
        target_variant: str,
        redecide: bool,
    ) -> None:
        self.bucket, self.photos, self.backfill = bucket, photos, backfill
        self.execution, self.target_variant, self.redecide = execution, target_variant, redecide

    @classmethod
    def parse(cls, event: object) -> Batch:
        if not isinstance(event, dict):
            raise InvalidEvent(f"the batch must be a JSON object, got {shown(event)}")
        items, settings = event.get("Items"), event.get("BatchInput")
        if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH_ITEMS:
            raise InvalidEvent(f"Items must be a list of 1 to {MAX_BATCH_ITEMS} S3 objects")
        if not isinstance(settings, dict):
            raise InvalidEvent("the batch has no BatchInput")
        bucket, backfill, execution = (
            settings.get(name) for name in ("bucket", "backfill", "execution")
        )
        if not all(isinstance(v, str) and v for v in (bucket, backfill, execution)):
            raise InvalidEvent("BatchInput needs bucket, backfill and execution")
        target_variant = settings.get("target_variant") or ""
        if not isinstance(target_variant, str):
            raise InvalidEvent(
                f"target_variant must be a variant name, got {shown(target_variant)}"
            )
        photos = []
        for item in items:
            key, etag = (item.get(n) if isinstance(item, dict) else None for n in ("Key", "Etag"))
            if not (isinstance(key, str) and key and isinstance(etag, str)):
                raise InvalidEvent(f"an item is not an S3 object with Key and Etag: {shown(item)}")
            etag = etag.strip('"')
            photos.append(Photo(key, etag, image_id(str(bucket), key, etag)))
        return cls(
            str(bucket), photos, str(backfill), str(execution), target_variant,
            settings.get("redecide") is True,
        )  # fmt: skip


class Scorer:
    """One batch's photos through the endpoint and into the decisions table."""

    def __init__(
        self,
        table: str,
        endpoint: str,
        threshold: float,
        audit_rate: float,
        limit: int,
        batch: Batch,
    ) -> None:
        self.table, self.endpoint, self.threshold = table, endpoint, threshold
        self.audit_rate, self.limit, self.batch = audit_rate, limit, batch
        self.dynamodb = aws_client("dynamodb", **DYNAMODB_CLIENT_CONFIG)

    def decided_revisions(self, images: list[str]) -> dict[str, int]:
        """The photos among `images` that have a decision, with its revision."""
        found: dict[str, int] = {}
        for start in range(0, len(images), BATCH_GET_KEYS):
            keys: list[dict[str, Any]] = [
                {PARTITION_KEY: {"S": image}} for image in images[start : start + BATCH_GET_KEYS]
            ]
            request: dict[str, Any] = {
                self.table: {
                    "Keys": keys,
                    "ProjectionExpression": "#image, #revision",
                    "ExpressionAttributeNames": {"#image": PARTITION_KEY, "#revision": "revision"},
                }
            }
            # Keys still unprocessed after the last round are scored as undecided: the
            # conditional write still keeps a decision that exists.
            for _round in range(BATCH_GET_ROUNDS):
                answer = self.dynamodb.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    found[item[PARTITION_KEY]["S"]] = int(item.get("revision", {}).get("N", "0"))
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
        return found

    def score(self, photo: Photo, decided: dict[str, int]) -> dict[str, Any]:
        outcome: dict[str, Any] = {"key": photo.key, "etag": photo.etag, "image": photo.image}
        if photo.image in decided and not self.batch.redecide:
            return {**outcome, "outcome": contract.OUTCOME_ALREADY_DECIDED}
        decided_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        try:
            stored = read_image(self.batch.bucket, photo.key, self.limit, etag=photo.etag)
            answer = self._classify(stored.data, stored.content_type, photo)
        except Exception as error:  # named per photo: the batch goes on
            name = type(error).__name__
            cause = str(error)[:300]
            if name not in REJECTION_REASONS:
                return {
                    **outcome,
                    "outcome": contract.OUTCOME_FAILED,
                    "error": name,
                    "cause": cause,
                }
            item: dict[str, Any] = {
                "status": {"S": STATUS_REJECTED},
                "rejection": {"S": name},
                "rejection_cause": {"S": cause},
            }
            written = self._write(photo, item, decided_at, decided.get(photo.image))
            return {**outcome, **written, "error": name, "cause": cause}
        inferences, variant = answer.probabilities, answer.variant
        best = max(range(len(inferences)), key=inferences.__getitem__)
        label, confidence = LABELS[best], inferences[best]
        item = {
            "label": {"S": label},
            "confidence": {"N": dynamodb_number(confidence)},
            "inferences": {"L": [{"N": dynamodb_number(v)} for v in inferences]},
            "model_version": {"S": version_of_variant(variant)},
            "endpoint": {"S": self.endpoint},
            "variant": {"S": variant},
            "status": {"S": STATUS_ROUTED},
        }
        if answer.familiarity is not None:
            item["familiarity"] = {"N": dynamodb_number(answer.familiarity[0])}
        if answer.familiarity is not None and not answer.familiarity[1]:
            # As the live workflow: a photo unlike the training photos is never routed.
            item["status"] = {"S": STATUS_NEEDS_REVIEW}
            item.update(self._queued(REASON_UNFAMILIAR, decided_at))
        elif confidence < self.threshold:
            item["status"] = {"S": STATUS_NEEDS_REVIEW}
            item.update(self._queued(REASON_DOUBTFUL, decided_at))
        elif in_audit_sample(photo.image, self.audit_rate):
            item.update(self._queued(REASON_AUDIT, decided_at))
        written = self._write(photo, item, decided_at, decided.get(photo.image))
        return {**outcome, **written, "label": label, "confidence": confidence}

    def _classify(self, image: bytes, content_type: str, photo: Photo) -> EndpointAnswer:
        inference_id = f"{self.batch.backfill}:{photo.image}"[-64:]
        for wait in (*ENDPOINT_RETRY_WAITS, None):
            try:
                return invoke(
                    self.endpoint, image, content_type, inference_id, self.batch.target_variant
                )
            except EndpointUnavailable:
                if wait is None:
                    raise
                time.sleep(wait)
        raise AssertionError("unreachable")

    @staticmethod
    def _queued(reason: str, decided_at: str) -> dict[str, Any]:
        return {
            "review_reason": {"S": reason},
            "review_pending": {"S": REVIEW_PENDING},
            "queued_at": {"S": decided_at},
        }

    def _write(
        self, photo: Photo, item: dict[str, Any], decided_at: str, revision: int | None
    ) -> dict[str, Any]:
        """The decision, written as the live workflow writes its first one (or, to
        redecide, over the model's decision at `revision`, bumping it); the outcome."""
        from botocore.exceptions import ClientError

        item = {
            PARTITION_KEY: {"S": photo.image},
            "source": {"S": SOURCE_MODEL},
            "decided_at": {"S": decided_at},
            "execution": {"S": self.batch.execution},
            "revision": {"N": "0"},
            contract.BACKFILL_ATTRIBUTE: {"S": self.batch.backfill},
            **item,
        }
        condition: dict[str, Any] = {
            "ConditionExpression": FIRST_WRITE_CONDITION,
            "ExpressionAttributeNames": {
                "#image": PARTITION_KEY,
                "#execution": "execution",
                "#revision": "revision",
            },
            "ExpressionAttributeValues": {
                ":execution": {"S": self.batch.execution},
                ":first": {"N": "0"},
            },
        }
        if self.batch.redecide and revision is not None:
            # The model's decision as read is replaced; a person's answer, or a write since
            # the read, stays (as the review's writes: contract/decisions.py, `revision`).
            item["revision"] = {"N": str(revision + 1)}
            condition = {
                "ConditionExpression": "#source = :model AND #revision = :seen",
                "ExpressionAttributeNames": {"#source": "source", "#revision": "revision"},
                "ExpressionAttributeValues": {
                    ":model": {"S": SOURCE_MODEL},
                    ":seen": {"N": str(revision)},
                },
            }
        try:
            self.dynamodb.put_item(TableName=self.table, Item=item, **condition)
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            return {"outcome": contract.OUTCOME_ALREADY_DECIDED}
        return {"outcome": item["status"]["S"]}
