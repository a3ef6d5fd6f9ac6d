"""A decisions table in the local AWS, seeded as the workflow writes it, with real photos.

Each test gets its own bucket and table (created from training_job.review.table, the key
schema serverless.yml declares), staged CIFAR-100 test images from ../shared/data and a
phone-size JPEG, queued items as the workflow writes them, an EventBridge rule that sends
the decision events to an SQS queue the test reads, and the review server on a free port.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from PIL import Image

from contract.decisions import (
    EVENT_SOURCE,
    REASON_AUDIT,
    REASON_DOUBTFUL,
    REVIEW_PENDING,
    SOURCE_MODEL,
    STATUS_NEEDS_REVIEW,
    STATUS_ROUTED,
    image_id,
)
from tests.conftest import SHARED_ARCHIVE, free_port
from training_job.data.cifar import read_archive, row_to_image
from training_job.data.stage import encode_png
from training_job.review.server import ReviewServer, serving
from training_job.review.store import ReviewStore, plain
from training_job.review.table import table_definition

CLASSES = {8: "bicycle", 48: "motorcycle"}  # CIFAR-100 fine label -> our class
PHONE_SIZE = (4032, 3024)


@dataclass
class Photo:
    image: str  # s3://bucket/key
    key: str
    truth: str
    size: tuple[int, int]


@dataclass
class ReviewWorld:
    bucket: str
    table: str
    dynamodb: Any
    s3: Any
    events_queue: str
    photos: list[Photo] = field(default_factory=list)

    def store(self) -> ReviewStore:
        return ReviewStore(self.dynamodb, self.s3, boto3.client("events"), self.table, self.bucket)

    def item(self, image: str) -> dict[str, Any]:
        response = self.dynamodb.get_item(
            TableName=self.table, Key={"image": {"S": image}}, ConsistentRead=True
        )
        return plain(response["Item"])

    def events(self) -> list[dict[str, Any]]:
        """The decision events delivered so far for this world's photos."""
        sqs = boto3.client("sqs")
        found = []
        while True:
            messages = sqs.receive_message(
                QueueUrl=self.events_queue, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return found
            for message in messages:
                event = json.loads(message["Body"])
                if event["detail"]["image"].startswith(f"s3://{self.bucket}/"):
                    found.append(event)
                sqs.delete_message(
                    QueueUrl=self.events_queue, ReceiptHandle=message["ReceiptHandle"]
                )


@pytest.fixture(scope="session")
def cifar_test_photos(shared_data: Path) -> list[tuple[str, str, bytes]]:
    """(filename, true class, PNG bytes) of the first CIFAR-100 test images, both classes."""
    split = read_archive(SHARED_ARCHIVE).test
    photos = []
    for row in range(12):
        pixels = row_to_image(split.data[row])
        photos.append((split.filenames[row], CLASSES[split.fine_labels[row]], encode_png(pixels)))
    return photos


@functools.cache
def phone_jpeg() -> bytes:
    """A 4032x3024 JPEG, the size of a phone camera's photo (smooth, so a few hundred KB)."""
    width, height = PHONE_SIZE
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack(
        [np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)), (x + y) % 256],
        axis=-1,
    ).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def seed_item(
    world: ReviewWorld,
    photo: Photo,
    queued_at: str,
    reason: str = REASON_DOUBTFUL,
    guess: str = "bicycle",
    confidence: float = 0.62,
) -> None:
    """The item the workflow writes for a photo it queued (contract/decisions.py)."""
    inferences = (
        [confidence, 1 - confidence] if guess == "bicycle" else [1 - confidence, confidence]
    )
    item = {
        "image": {"S": photo.image},
        "label": {"S": guess},
        "confidence": {"N": str(confidence)},
        "inferences": {"L": [{"N": str(value)} for value in inferences]},
        "model_version": {"S": "3"},
        "endpoint": {"S": "scones-image-classifier"},
        "variant": {"S": "v3"},
        "decided_at": {"S": queued_at},
        "execution": {"S": f"arn:aws:states:us-east-1:123456789012:execution:wf:{photo.key}"},
        "status": {"S": STATUS_ROUTED if reason == REASON_AUDIT else STATUS_NEEDS_REVIEW},
        "source": {"S": SOURCE_MODEL},
        "review_reason": {"S": reason},
        "review_pending": {"S": REVIEW_PENDING},
        "queued_at": {"S": queued_at},
    }
    world.dynamodb.put_item(TableName=world.table, Item=item)


@pytest.fixture
def world(
    local_aws: dict[str, str], unique_name: str, cifar_test_photos: list[tuple[str, str, bytes]]
) -> Iterator[ReviewWorld]:
    """Five CIFAR photos and a phone photo queued, oldest first in that order."""
    s3 = boto3.client("s3")
    dynamodb = boto3.client("dynamodb")
    s3.create_bucket(Bucket=unique_name)
    dynamodb.create_table(**table_definition(unique_name))
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName=unique_name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events = boto3.client("events")
    events.put_rule(Name=unique_name, EventPattern=json.dumps({"source": [EVENT_SOURCE]}))
    events.put_targets(Rule=unique_name, Targets=[{"Id": "queue", "Arn": queue_arn}])
    world = ReviewWorld(unique_name, unique_name, dynamodb, s3, queue)
    uploads = [
        (f"test/{name}", truth, data, (32, 32)) for name, truth, data in cifar_test_photos[:5]
    ]
    uploads.append(("incoming/IMG_0001.jpg", "bicycle", phone_jpeg(), PHONE_SIZE))
    for number, (key, truth, data, size) in enumerate(uploads):
        s3.put_object(Bucket=unique_name, Key=key, Body=data)
        # The id the workflow gives an upload: its location and its ETag.
        photo = Photo(image_id(unique_name, key, hashlib.md5(data).hexdigest()), key, truth, size)
        world.photos.append(photo)
        seed_item(world, photo, f"2026-11-29T10:00:{number:02d}.000Z")
    try:
        yield world
    finally:
        events.remove_targets(Rule=unique_name, Ids=["queue"])
        events.delete_rule(Name=unique_name)


@pytest.fixture
def review_server(world: ReviewWorld) -> Iterator[ReviewServer]:
    """The review page for reviewer "alice", on a free loopback port."""
    with serving(world.store(), "alice", port=free_port()) as server:
        yield server
