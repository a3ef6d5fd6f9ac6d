"""The demo's review step (training_job/demo/review_step.py) on a stack with a decisions table:
the real `training_job review` command serves, the scripted reviewer answers every queued
test photo with its true label, and the summary shows the queue and the decisions."""

from __future__ import annotations

import json
import signal

import boto3
import pytest

from contract.decisions import REVIEWED_MANIFEST_KEY, image_id
from tests.training_job.review.conftest import (
    Photo,
    ReviewWorld,
    seed_item,
)
from tests.training_job.review.conftest import (
    cifar_test_photos as cifar_test_photos,  # the fixture, for this folder
)
from training_job.demo import review_step
from training_job.review.table import table_definition


def stack_template(table: str) -> str:
    """A stack holding the decisions table, as serverless.yml declares it."""
    definition = table_definition(table)
    properties = {
        name: definition[name]
        for name in ("TableName", "BillingMode", "AttributeDefinitions", "KeySchema",
                     "GlobalSecondaryIndexes")
    }  # fmt: skip
    properties["SSESpecification"] = {"SSEEnabled": True}
    resources = {"DecisionsTable": {"Type": "AWS::DynamoDB::Table", "Properties": properties}}
    return json.dumps({"Resources": resources})


def test_the_review_step_answers_the_queue_with_the_true_labels(
    local_aws: dict[str, str],
    unique_name: str,
    cifar_test_photos: list[tuple[str, str, bytes]],
) -> None:
    """Also: the review server stops as Ctrl-C stops it (exit 0) when the demo runs with
    SIGINT ignored, as a demo started in the background or by CI does; it was killed
    after the 30 s stop timeout instead (-9), which every such run waited for."""
    s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
    cloudformation = boto3.client("cloudformation")
    s3.create_bucket(Bucket=unique_name)
    cloudformation.create_stack(StackName=unique_name, TemplateBody=stack_template(unique_name))
    world = ReviewWorld(unique_name, unique_name, dynamodb, s3, events_queue="")
    lines = []
    for row, (name, truth, data) in enumerate(cifar_test_photos[:6]):
        s3.put_object(Bucket=unique_name, Key=f"test/{name}", Body=data)
        lines.append(f"{row}\t{('bicycle', 'motorcycle').index(truth)}\t{name}\n")
        if row % 2 == 0:  # half of them queued, the model guessing "bicycle" each time
            photo = Photo(image_id(unique_name, f"test/{name}"), f"test/{name}", truth, (32, 32))
            seed_item(world, photo, f"2026-11-29T10:00:{row:02d}.000Z")
    s3.put_object(Bucket=unique_name, Key="test.lst", Body="".join(lines).encode())

    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `make demo &` runs it
    try:
        review = review_step.review_step(unique_name, unique_name)
    finally:
        signal.signal(signal.SIGINT, ignored)

    assert review is not None
    assert (review["queue_before"], review["queue_after"]) == (3, 0)
    queued = [truth for row, (_, truth, _) in enumerate(cifar_test_photos[:6]) if row % 2 == 0]
    assert review["answers"] == {answer: queued.count(answer) for answer in set(queued)}
    assert review["decisions"] == {"reviewed/person": 3}
    assert (review["conflicts"], review["unknown"]) == (0, 0)
    assert review["server_exit_statuses"] == [0]
    assert s3.get_object(Bucket=unique_name, Key=REVIEWED_MANIFEST_KEY)["ContentLength"] > 0
    printed = dict(review_step.summary_lines(review))
    assert printed["review queue"] == "3 before, 0 after"


def test_a_second_scripted_reviewer_decides_what_contradicts_a_confident_model(
    local_aws: dict[str, str],
    unique_name: str,
    cifar_test_photos: list[tuple[str, str, bytes]],
) -> None:
    """The model 95% sure of the wrong class: the first reviewer's true answer waits for a
    second person (training_job/review/agreement.py); the second empties the queue."""
    s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
    s3.create_bucket(Bucket=unique_name)
    boto3.client("cloudformation").create_stack(
        StackName=unique_name, TemplateBody=stack_template(unique_name)
    )
    world = ReviewWorld(unique_name, unique_name, dynamodb, s3, events_queue="")
    name, truth, data = cifar_test_photos[0]
    s3.put_object(Bucket=unique_name, Key=f"test/{name}", Body=data)
    s3.put_object(
        Bucket=unique_name,
        Key="test.lst",
        Body=f"0\t{('bicycle', 'motorcycle').index(truth)}\t{name}\n".encode(),
    )
    wrong = "motorcycle" if truth == "bicycle" else "bicycle"
    photo = Photo(image_id(unique_name, f"test/{name}"), f"test/{name}", truth, (32, 32))
    seed_item(world, photo, "2026-11-29T10:00:00.000Z", guess=wrong, confidence=0.95)

    review = review_step.review_step(unique_name, unique_name)

    assert review is not None
    assert (review["queue_before"], review["queue_after"]) == (1, 0)
    assert review["answers"] == {truth: 1} and review["second_opinions"] == 1
    assert review["server_exit_statuses"] == [0, 0]  # each reviewer's server, stopped
    item = world.item(photo.image)
    assert (item["first_reviewer"], item["reviewer"]) == (
        review_step.REVIEWER,
        review_step.SECOND_REVIEWER,
    )
    assert item["label"] == truth
    assert "second opinions 1" in dict(review_step.summary_lines(review))["scripted answers"]


def test_a_stack_without_a_decisions_table_has_nothing_to_review(
    local_aws: dict[str, str], unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    template = {"Resources": {"Bucket": {"Type": "AWS::S3::Bucket"}}}
    boto3.client("cloudformation").create_stack(
        StackName=unique_name, TemplateBody=json.dumps(template)
    )
    assert review_step.review_step(unique_name, unique_name) is None
    assert "no decisions table" in capsys.readouterr().out
    assert review_step.summary_lines(None) == [("review queue", "n/a (no decisions table)")]
