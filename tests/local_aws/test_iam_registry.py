"""docs/iam/model-registry-policy.json, held to its word in the local AWS: a role with it
registers, lists, shows, approves and rejects versions of the project's groups; without
its review statement it cannot approve; it reaches no other group."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest

from tests.training_job.registry_helpers import METRICS, put_training_output, register_output
from training_job.__main__ import main
from training_job.demo.sagemaker_role import filled_policy
from training_job.environment import overridden
from training_job.models import registry

ACCOUNT = "123456789012"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
         "Action": "sts:AssumeRole"}
    ],
}  # fmt: skip


def _role(name: str, bucket: str, without: tuple[str, ...] = ()) -> str:
    session = boto3.session.Session()
    policy = filled_policy("model-registry-policy.json", bucket, session.region_name, ACCOUNT)
    policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] not in without]
    client = session.client("iam")
    arn: str = client.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))[
        "Role"
    ]["Arn"]
    client.put_role_policy(RoleName=name, PolicyName="registry", PolicyDocument=json.dumps(policy))
    return arn


@contextmanager
def acting_as(role_arn: str) -> Iterator[None]:
    """Every boto3 client made inside signs with the role's temporary credentials."""
    keys: dict[str, Any] = boto3.client("sts").assume_role(
        RoleArn=role_arn, RoleSessionName="registry-test"
    )["Credentials"]
    # boto3's default session keeps the credentials it found first: a fresh one inside.
    saved, boto3.DEFAULT_SESSION = boto3.DEFAULT_SESSION, None
    try:
        with overridden(
            {
                "AWS_ACCESS_KEY_ID": keys["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": keys["SecretAccessKey"],
                "AWS_SESSION_TOKEN": keys["SessionToken"],
            }
        ):
            yield
    finally:
        boto3.DEFAULT_SESSION = saved


@pytest.fixture
def bucket(local_aws: dict[str, str], unique_name: str) -> str:
    boto3.client("s3").create_bucket(Bucket=unique_name)
    return unique_name


def test_the_registry_policy_lets_a_person_register_compare_and_review(
    bucket: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    group = f"scones-unlimited-{unique_name}"  # the policy's groups: scones-unlimited-*
    register_output(bucket, "job-1", group)
    model_data = put_training_output(bucket, "job-2", METRICS)
    role = _role(f"Registry-{unique_name}", bucket)
    with acting_as(role):
        assert main(["models", "register", "--model-data", model_data, "--manifest",
                     f"s3://{bucket}/manifest.json", "--model-group", group]) == 0  # fmt: skip
        assert main(["models", "list", "--model-group", group]) == 0
        assert main(["models", "show", "2", "--model-group", group]) == 0
        assert main(["models", "approve", "2", "--model-group", group,
                     "--description", "better past the gate"]) == 0  # fmt: skip
        assert main(["models", "reject", "1", "--model-group", group,
                     "--description", "superseded"]) == 0  # fmt: skip
    sm = boto3.client("sagemaker")
    assert [v.status for v in registry.versions(sm, group)] == ["Approved", "Rejected"]


def test_without_the_review_statement_approval_is_access_denied(
    bucket: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    group = f"scones-unlimited-{unique_name}"
    register_output(bucket, "job-1", group)
    role = _role(f"NoReview-{unique_name}", bucket, without=("ApproveOrRejectModelVersions",))
    capsys.readouterr()
    with acting_as(role):
        assert main(["models", "list", "--model-group", group]) == 0
        code = main(["models", "approve", "1", "--model-group", group, "--description", "x"])
    assert code == 1
    err = capsys.readouterr().err
    assert "AccessDeniedException" in err and "sagemaker:UpdateModelPackage" in err
    assert registry.version(boto3.client("sagemaker"), group, 1).status == "PendingManualApproval"


def test_the_policy_reaches_no_other_group(
    bucket: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    group = f"other-{unique_name}"
    register_output(bucket, "job-1", group)
    role = _role(f"OtherGroup-{unique_name}", bucket)
    capsys.readouterr()
    with acting_as(role):
        assert main(["models", "list", "--model-group", group]) == 1
    err = capsys.readouterr().err
    assert "sagemaker:DescribeModelPackageGroup" in err and "AccessDenied" in err
