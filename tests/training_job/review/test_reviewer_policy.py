"""docs/iam/reviewer-policy.json grants what the review command does, and no more.

The store's real AWS calls are recorded (botocore's provide-client-params hook) while it serves a
queue in the local AWS: next photo, counts, the photo's bytes, answers and an undo. Each
call becomes the IAM requests AWS evaluates for it (a CopyObject is a GetObject of the
source and a PutObject of the copy; a PutEvents entry carries `events:source` and
`events:detail-type`), and local_aws.iam's evaluator judges them against the filled
policy: every one is allowed, none is allowed once its statement is removed, and
requests the command never makes (a Scan, a write outside reviewed/, an event of another
source) are not allowed.

The local AWS holds a principal's S3 calls to IAM, but not yet its DynamoDB and
EventBridge calls (docs/local-mode.md): the S3 statements are also checked for real, with
the store's S3 client acting as a role with the policy; the others are judged here, by the
same evaluator the local AWS uses.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from contract.decisions import EVENT_DETAIL_TYPE, EVENT_SOURCE
from local_aws import iam
from tests.conftest import REPO_ROOT
from tests.training_job.review.conftest import ReviewWorld
from training_job.data.bucket import require_region
from training_job.review.store import ReviewStore

ACCOUNT = "123456789012"
REGION = "us-east-1"
POLICY = REPO_ROOT / "docs" / "iam" / "reviewer-policy.json"
PRINCIPAL = f"arn:aws:iam::{ACCOUNT}:role/Reviewer"


def filled_policy(bucket: str, table: str) -> dict[str, Any]:
    text = POLICY.read_text()
    for placeholder, value in (
        ("ACCOUNT_ID", ACCOUNT), ("REGION", REGION), ("BUCKET", bucket), ("TABLE", table)
    ):  # fmt: skip
        text = text.replace(placeholder, value)
    policy: dict[str, Any] = json.loads(text)
    return policy


def iam_requests(service: str, operation: str, params: dict[str, Any]) -> list[iam.Request]:
    """The IAM requests AWS evaluates for one API call (the Service Authorization Reference)."""

    def request(action: str, resource: str, **context: str) -> iam.Request:
        return iam.Request(PRINCIPAL, action, resource, context)

    if service == "dynamodb":
        table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{params['TableName']}"
        if "IndexName" in params:
            table += f"/index/{params['IndexName']}"
        return [request(f"dynamodb:{operation}", table)]
    if service == "s3" and operation == "GetBucketLocation":
        return [request("s3:GetBucketLocation", f"arn:aws:s3:::{params['Bucket']}")]
    if service == "s3":
        target = f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"
        if operation == "CopyObject":
            source = params["CopySource"]
            return [
                request("s3:GetObject", f"arn:aws:s3:::{source['Bucket']}/{source['Key']}"),
                request("s3:PutObject", target),
            ]
        return [request(f"s3:{operation}", target)]
    if service == "events" and operation == "PutEvents":
        bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/"
        return [
            request(
                "events:PutEvents",
                bus + entry.get("EventBusName", "default"),
                **{"events:source": entry["Source"], "events:detail-type": entry["DetailType"]},
            )
            for entry in params["Entries"]
        ]
    raise AssertionError(f"a call the policy does not cover: {service}:{operation}")


@pytest.fixture
def recorded(world: ReviewWorld) -> list[iam.Request]:
    """The IAM requests of a review session: the command's region check of the bucket, then
    browse, fetch, answer, undo, answer again."""
    calls: list[iam.Request] = []

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.extend(iam_requests(model.service_model.service_name, model.name, params))

    def client(service: str) -> Any:
        made = boto3.client(service)
        made.meta.events.register("provide-client-params", record)
        return made

    s3 = client("s3")
    require_region(s3, world.bucket)  # what `training_job review` checks before serving
    store = ReviewStore(client("dynamodb"), s3, client("events"), world.table, world.bucket)
    first, phone = world.photos[0], world.photos[-1]
    item = store.next_pending()
    assert item is not None
    store.next_pending((item["image"], item["queued_at"]))
    store.count_pending()
    store.image_bytes(first.image, 1 << 20)
    store.image_bytes(phone.image, 8 << 20)  # incoming/, as the trigger's photos are
    answered = store.answer(first.image, "bicycle", 0, "alice")  # creates the manifest
    store.undo(first.image, answered["revision"], "alice")
    store.answer(phone.image, "motorcycle", 0, "alice")  # updates it
    return calls


@pytest.fixture
def known_event_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluator is told EventBridge's two PutEvents condition keys (the local AWS
    never fills them itself, so it lists them as unknown and fails closed on them)."""
    keys = iam.CONTEXT_KEYS | {"events:source", "events:detail-type"}
    monkeypatch.setattr(iam, "CONTEXT_KEYS", keys)


def test_every_call_of_a_review_session_is_allowed(
    world: ReviewWorld, recorded: list[iam.Request], known_event_keys: None
) -> None:
    policy = filled_policy(world.bucket, world.table)
    actions = {request.action for request in recorded}
    assert actions == {
        "dynamodb:Query", "dynamodb:GetItem", "dynamodb:UpdateItem",
        "s3:GetBucketLocation", "s3:GetObject", "s3:PutObject", "events:PutEvents",
    }  # fmt: skip
    refused = [r for r in recorded if iam.evaluate([policy], r) is not iam.Decision.ALLOW]
    assert refused == []


def test_each_statement_is_needed(
    world: ReviewWorld, recorded: list[iam.Request], known_event_keys: None
) -> None:
    policy = filled_policy(world.bucket, world.table)
    for statement in policy["Statement"]:
        without = {**policy, "Statement": [s for s in policy["Statement"] if s is not statement]}
        refused = [r for r in recorded if iam.evaluate([without], r) is not iam.Decision.ALLOW]
        assert refused, f"{statement['Sid']} is not needed"


def test_nothing_the_command_never_does_is_allowed(
    world: ReviewWorld, known_event_keys: None
) -> None:
    policy = filled_policy(world.bucket, world.table)
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{world.table}"
    bucket = f"arn:aws:s3:::{world.bucket}"
    bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"
    event = {"events:source": EVENT_SOURCE, "events:detail-type": EVENT_DETAIL_TYPE}
    never = [
        ("dynamodb:Scan", table, {}),
        ("dynamodb:Query", table, {}),  # only the queue's index
        ("dynamodb:PutItem", table, {}),
        ("dynamodb:DeleteItem", table, {}),
        ("dynamodb:UpdateItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/other", {}),
        ("s3:GetObject", f"{bucket}/models/job/output/model.tar.gz", {}),
        ("s3:GetObject", f"{bucket}/data_capture/x.jsonl", {}),
        ("s3:PutObject", f"{bucket}/incoming/photo.jpg", {}),
        ("s3:PutObject", f"{bucket}/reviewed/other.lst", {}),
        ("s3:PutObject", f"{bucket}/train.lst", {}),
        ("s3:DeleteObject", f"{bucket}/reviewed/reviewed.lst", {}),
        ("s3:ListBucket", bucket, {}),
        ("s3:GetObject", "arn:aws:s3:::another-bucket/incoming/x.png", {}),
        ("events:PutEvents", bus, {**event, "events:source": "aws.s3"}),
        ("events:PutEvents", bus, {**event, "events:detail-type": "Object Created"}),
        ("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/other", event),
    ]
    allowed = [
        (action, resource)
        for action, resource, context in never
        if iam.evaluate([policy], iam.Request(PRINCIPAL, action, resource, context))
        is not iam.Decision.NONE
    ]
    assert allowed == []


def assumed_s3(world: ReviewWorld, policy: dict[str, Any], name: str) -> Any:
    """An S3 client acting as a role with `policy`: the local AWS enforces S3 for it."""
    iam_client = boto3.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"}
        ],
    }
    arn = iam_client.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    iam_client.put_role_policy(
        RoleName=name, PolicyName="reviewer", PolicyDocument=json.dumps(policy)
    )
    keys = boto3.client("sts").assume_role(RoleArn=arn["Role"]["Arn"], RoleSessionName="alice")
    credentials = keys["Credentials"]
    return boto3.client(
        "s3",
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def test_the_s3_statements_hold_in_the_local_aws(world: ReviewWorld, unique_name: str) -> None:
    """S3 is held to a principal's policies in the local AWS: the review's S3 calls pass
    as a role with the policy (the first manifest write too, whose read of the missing
    manifest is AccessDenied without s3:ListBucket), and fail without their statement."""
    policy = filled_policy(world.bucket, world.table)
    s3 = assumed_s3(world, policy, unique_name)
    store = ReviewStore(
        boto3.client("dynamodb"), s3, boto3.client("events"), world.table, world.bucket
    )
    first, phone = world.photos[0], world.photos[-1]
    assert store.image_bytes(phone.image, 8 << 20).startswith(b"\xff\xd8\xff")
    answered = store.answer(first.image, "bicycle", 0, "alice")  # creates the manifest
    store.undo(first.image, answered["revision"], "alice")
    store.answer(phone.image, "motorcycle", 0, "alice")
    assert [entry.label for entry in store.manifest.entries()] == [1]

    for sid, call in (
        ("WriteTheAnswers", lambda s: s.answer(world.photos[1].image, "bicycle", 0, "alice")),
        ("ReadThePhotosAndTheAnswers", lambda s: s.image_bytes(first.image, 1 << 20)),
    ):
        without = {**policy, "Statement": [s for s in policy["Statement"] if s["Sid"] != sid]}
        limited = ReviewStore(
            boto3.client("dynamodb"),
            assumed_s3(world, without, f"{unique_name}-{sid}"[:64]),
            boto3.client("events"),
            world.table,
            world.bucket,
        )
        with pytest.raises(ClientError, match="AccessDenied"):
            call(limited)
