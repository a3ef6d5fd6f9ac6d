"""Decisions: the record every photo's run ends in, the review queue, and the event.

One item per photo in the decisions table (DynamoDB, declared in serverless.yml, its
name in DECISIONS_TABLE). The workflow writes it; the review command (`python -m
training_job review`) answers it; the monitor measures from it; `train
--include-reviewed` learns from the answers. All of them read these names.

Item attributes (DynamoDB types in brackets):
- `image` [S], the partition key: `s3://<bucket>/<key>#<etag>` of the photo (image_id):
  one decision per uploaded version. The workflow's write is conditional on the item not
  existing (or being the same execution's retry), so processing the same upload twice
  leaves one decision, and an upload over it under the same key gets its own.
- `label` [S] and `confidence` [N]: the model's best class and its probability;
  `inferences` [L of N]: the whole distribution, in LABELS order.
- `model_version` [S], `endpoint` [S], `variant` [S]: what decided (the variant that
  answered, `X-Amzn-Invoked-Production-Variant`).
- `decided_at` [S]: ISO 8601 UTC; `execution` [S]: the Step Functions execution ARN.
- `familiarity` [N, or NULL]: the model's familiarity score for the photo (contract/
  familiarity.py), NULL when the model version has none (familiarity unknown).
- `status` [S]: one of STATUSES. `source` [S]: one of SOURCES (who set `label` last).
- `review_reason` [S]: one of REVIEW_REASONS, present when the photo was queued.
- `review_pending` [S]: the queue, a sparse index (REVIEW_INDEX): present (value
  REVIEW_PENDING) only while a photo waits for a person, with `queued_at` [S] as the
  index's sort key, so the oldest waits first. Answering removes it.
- `answer` [S] (one of ANSWERS), `reviewer` [S], `reviewed_at` [S]: the person's answer.
- `first_answer` [S], `first_reviewer` [S]: an answer held for a second reviewer (it
  contradicted a confident model: training_job/review/agreement.py); the photo stays queued.
- `event_pending` [S]: present while a routed decision's event is still to be put (the
  outbox, EVENT_OUTBOX_INDEX below).
- `rejection` [S] (one of REJECTION_REASONS), `rejection_cause` [S]: why an upload was
  rejected (status STATUS_REJECTED); such an item has no label.
- `backfill` [S]: the backfill that wrote the decision (contract/backfill.py), absent on
  the live workflow's; a backfill puts no event (docs/events.md).
- `revision` [N]: bumped by every write after the first; each answer and undo is
  conditional on the revision the reviewer saw, so two reviewers never overwrite
  each other (the second gets ConditionalCheckFailedException and a fresh item).

The event on the default EventBridge bus, for a routing system to subscribe to:
source EVENT_SOURCE, detail-type EVENT_DETAIL_TYPE, detail = the decision's fields
(image, label, confidence, model_version, endpoint, variant, decided_at, execution,
source, status). Emitted when the model routes a photo (source "model", status "routed"),
when a person answers one (source "person", status "reviewed") and when that person takes
the answer back (source "person", status EVENT_STATUS_WITHDRAWN, label the answer taken
back): an undo never emits a model event again. docs/events.md documents the schema.

Standard library only: packaged into the Lambdas and read by training_job.
"""

from __future__ import annotations

import re

from contract import shown

TABLE_ENVIRONMENT_VARIABLE = "DECISIONS_TABLE"
AUDIT_RATE_ENVIRONMENT_VARIABLE = "AUDIT_RATE"
DEFAULT_AUDIT_RATE = 0.05  # share of passed photos also queued for review (unbiased sample)

PARTITION_KEY = "image"
REVIEW_INDEX = "review-queue"
REVIEW_INDEX_PARTITION_KEY = "review_pending"
REVIEW_INDEX_SORT_KEY = "queued_at"
REVIEW_PENDING = "pending"

STATUS_ROUTED = "routed"  # passed the gate; the routing system has its answer
STATUS_NEEDS_REVIEW = "needs_review"  # stopped at the gate, waiting for a person
STATUS_REVIEWED = "reviewed"  # a person answered
STATUS_REJECTED = "rejected"  # the upload could not be classified; `rejection` says why
STATUSES = (STATUS_ROUTED, STATUS_NEEDS_REVIEW, STATUS_REVIEWED, STATUS_REJECTED)

# Why an upload was rejected: the handler error that refused it (handlers/), the item's
# `rejection` [S], with the handler's message in `rejection_cause` [S]. Each is the
# driver's upload, never the endpoint: the state machine records these as decisions.
REJECTION_REASONS = ("NotAnImage", "ImageTooLarge", "ImageChanged", "ImageNotFound")

REASON_DOUBTFUL = "doubtful"  # below the threshold
REASON_AUDIT = "audit"  # passed, sampled for an unbiased measure of accuracy past the gate
# Unlike the model's training photos (contract/familiarity.py): never routed, whatever the
# model's confidence.
REASON_UNFAMILIAR = "unfamiliar"
REVIEW_REASONS = (REASON_DOUBTFUL, REASON_AUDIT, REASON_UNFAMILIAR)

SOURCE_MODEL = "model"
SOURCE_PERSON = "person"
SOURCES = (SOURCE_MODEL, SOURCE_PERSON)

# The classifier's classes in label order: label 0 is bicycle, 1 is motorcycle, in the
# manifests, the model's output, an item's `inferences` and the reviewed manifest alike.
CLASSES = ("bicycle", "motorcycle")
ANSWER_NEITHER = "neither"  # neither a bicycle nor a motorcycle: never a training label
ANSWERS = (*CLASSES, ANSWER_NEITHER)

EVENT_SOURCE = "scones-unlimited.image-workflow"
EVENT_DETAIL_TYPE = "Vehicle Classified"
# The event's `status` when a person takes their answer back (an undo): not an item
# status (the item goes back to the model's), so a routing system never reads an undo as
# a new routing decision.
EVENT_STATUS_WITHDRAWN = "withdrawn"
# The decision's fields an event's detail carries, in this order (docs/events.md).
EVENT_FIELDS = (
    "image",
    "label",
    "confidence",
    "model_version",
    "endpoint",
    "variant",
    "decided_at",
    "execution",
    "source",
    "status",
)

# The outbox: a routed decision is written with `event_pending` [S] = EVENT_PENDING, which
# the workflow removes once its event went out. The sparse index EVENT_OUTBOX_INDEX
# (partition key `event_pending`, sort key `decided_at`) holds only the decisions whose
# event is still to be put; publishDecisions (handlers/publish_decisions.py) puts them.
EVENT_PENDING_ATTRIBUTE = "event_pending"
EVENT_PENDING = "pending"
EVENT_OUTBOX_INDEX = "unsent-events"
EVENT_OUTBOX_SORT_KEY = "decided_at"


# The decision id names one version of a photo: `s3://<bucket>/<key>#<etag>`. S3 tells an
# upload over an earlier one under the same key apart by its ETag (the S3 EventBridge event's
# detail.object.etag), so a motorcycle uploaded over a bicycle gets a decision of its own,
# and a redelivery of the same upload finds its decision. An ETag is hex digits, with
# `-<parts>` for a multipart upload: it never holds ETAG_SEPARATOR, a key may.
ETAG_SEPARATOR = "#"
_ETAG = re.compile(r"^[0-9a-f]{32}(-[0-9]{1,5})?$")
MAX_ETAG_LENGTH = 38


def image_id(bucket: str, key: str, etag: str = "") -> str:
    """The partition key of the photo at `bucket`/`key` whose content has ETag `etag`
    (without its quotes); without an ETag, the id of the key alone (items written before
    decisions were per version)."""
    location = f"s3://{bucket}/{key}"
    return f"{location}{ETAG_SEPARATOR}{etag}" if etag else location


def is_etag(value: str) -> bool:
    """Whether `value` is an S3 ETag as the decision id carries it (no quotes)."""
    return bool(_ETAG.match(value))


def photo_location(image: str) -> str:
    """The `s3://bucket/key` a decision id names, without its ETag: what a list of photos
    by key (a test set's true labels) is keyed by."""
    bucket, key, _etag = split_image_id(image)
    return image_id(bucket, key)


def split_image_id(image: str) -> tuple[str, str, str]:
    """(bucket, key, etag) of a decision id (etag "" for an id without one); ValueError for
    anything that is not an `s3://bucket/key` id."""
    location, separator, etag = image.rpartition(ETAG_SEPARATOR)
    if not (separator and is_etag(etag)):
        location, etag = image, ""
    bucket, _, key = location.removeprefix("s3://").partition("/")
    if not location.startswith("s3://") or not bucket or not key:
        raise ValueError(f"not an s3://bucket/key photo id: {shown(image, 200)}")
    return bucket, key, etag


# Answers as training data, in the workflow's bucket: a `.lst` manifest
# (contract/manifest.py; label = index in LABELS order, "neither" never written) and the
# images it names, copied under REVIEWED_IMAGES_PREFIX with plain file names. The review
# command writes them; `train --include-reviewed` reads them.
REVIEWED_MANIFEST_KEY = "reviewed/reviewed.lst"
REVIEWED_IMAGES_PREFIX = "reviewed/images/"
# What the training job is told about the manifest it gets (environment variables, set
# by training_job/data/reviewed_photos.py, read by training_job/code/data.py into metrics.json).
REVIEWED_MANIFEST_VARIABLE = "SCONES_REVIEWED_MANIFEST"  # its s3:// URI
REVIEWED_SHA256_VARIABLE = "SCONES_REVIEWED_SHA256"  # the SHA-256 of the bytes checked


# Which model decided: the endpoint names each production (and shadow) variant after the
# registered model version it serves (`v<version>` of the SageMaker model package), so
# InvokeEndpoint's InvokedProductionVariant says the version without another API call.
# A variant that serves no registered version (an older deploy) keeps its own name.
VARIANT_PREFIX = "v"
UNVERSIONED = "unversioned"


def variant_for_version(version: int) -> str:
    """The variant name that serves model package version `version`."""
    return f"{VARIANT_PREFIX}{version}"


def version_of_variant(variant: str) -> str:
    """The model version a variant serves ("7" for "v7"), or UNVERSIONED."""
    digits = variant[len(VARIANT_PREFIX) :]
    if variant.startswith(VARIANT_PREFIX) and digits.isdigit() and not digits.startswith("0"):
        return digits
    return UNVERSIONED


# Answered review items, for the monitor: a second sparse index holding only the items a
# person answered (both keys are attributes the workflow and the review page write
# anyway: `review_reason` when queued, `reviewed_at` when answered; an undo that removes
# `reviewed_at` takes the item out). Query `review_reason = audit` and `reviewed_at >=
# since` is the audit sample of a period, without scanning the table. It projects what
# the measures read (contract/review_quality.py).
ANSWERED_INDEX = "answered"
ANSWERED_INDEX_PARTITION_KEY = "review_reason"
ANSWERED_INDEX_SORT_KEY = "reviewed_at"
ANSWERED_INDEX_PROJECTION = ("label", "inferences", "source", "model_version", "answer")


# The first write of a photo's decision (the image workflow's ConditionExpression, and the
# backfill's): written if the photo has none, or if this execution wrote it and nobody has
# changed it since (a retry after a lost answer). Its names and values: `#image`,
# `#execution`, `#revision`; `:execution` (the writer's execution ARN), `:first` (0).
FIRST_WRITE_CONDITION = (
    "attribute_not_exists(#image) OR (#execution = :execution AND #revision = :first)"
)
