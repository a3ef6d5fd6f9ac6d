"""The bucket is created private, encrypted, TLS-only and EventBridge-enabled, and an
existing one is brought to those settings without losing what others configured."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from tests.training_job.data.bucket_helpers import assert_settings
from training_job.data.bucket import (
    CAPTURE_EXPIRATION_RULE_ID,
    DEFAULT_CAPTURE_RETENTION_DAYS,
    BucketError,
    ensure_bucket,
    is_valid_bucket_name,
)

ACCOUNT = "123456789012"  # moto's account


def s3_client(region: str = "us-east-1") -> Any:
    return boto3.client("s3", region_name=region)


def test_missing_bucket_is_created_with_the_settings(local_aws: dict, unique_name: str) -> None:
    s3 = s3_client()
    assert ensure_bucket(s3, unique_name, ACCOUNT) is True
    assert_settings(s3, unique_name)
    assert s3.get_bucket_location(Bucket=unique_name)["LocationConstraint"] is None


def test_second_call_creates_nothing_and_keeps_one_tls_statement(
    local_aws: dict, unique_name: str
) -> None:
    s3 = s3_client()
    ensure_bucket(s3, unique_name, ACCOUNT)
    assert ensure_bucket(s3, unique_name, ACCOUNT) is False
    assert_settings(s3, unique_name)


def test_bucket_outside_us_east_1_gets_a_location_constraint(
    local_aws: dict, unique_name: str
) -> None:
    s3 = s3_client("eu-west-1")
    assert ensure_bucket(s3, unique_name, ACCOUNT) is True
    assert s3.get_bucket_location(Bucket=unique_name)["LocationConstraint"] == "eu-west-1"
    assert_settings(s3, unique_name)


def test_existing_bucket_is_brought_to_the_settings_keeping_other_config(
    local_aws: dict, unique_name: str
) -> None:
    s3 = s3_client()
    s3.create_bucket(Bucket=unique_name)
    other_statement = {
        "Sid": "OtherTeam",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:DeleteBucket",
        "Resource": f"arn:aws:s3:::{unique_name}",
    }
    s3.put_bucket_policy(
        Bucket=unique_name,
        Policy=json.dumps({"Version": "2012-10-17", "Statement": [other_statement]}),
    )
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName=unique_name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=unique_name,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    assert ensure_bucket(s3, unique_name, ACCOUNT) is False
    assert_settings(s3, unique_name)
    policy = json.loads(s3.get_bucket_policy(Bucket=unique_name)["Policy"])
    assert other_statement in policy["Statement"]
    notifications = s3.get_bucket_notification_configuration(Bucket=unique_name)
    assert notifications["QueueConfigurations"][0]["QueueArn"] == queue_arn


def test_objects_are_usable_under_the_tls_only_policy(local_aws: dict, unique_name: str) -> None:
    """Pins a local-mode gap: moto ignores `Bool` conditions, so without the local_aws
    patch the TLS-only Deny refuses every object request (403) on the loopback endpoint."""
    s3 = s3_client()
    ensure_bucket(s3, unique_name, ACCOUNT)
    s3.put_object(Bucket=unique_name, Key="probe.txt", Body=b"ok")
    assert s3.get_object(Bucket=unique_name, Key="probe.txt")["Body"].read() == b"ok"
    s3.delete_object(Bucket=unique_name, Key="probe.txt")


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("scones-unlimited-data", True),
        ("abc", True),
        ("ab", False),
        ("Upper-Case", False),
        ("has_underscore", False),
        ("with.dots", False),
        ("-leading-dash", False),
        ("x" * 64, False),
        ("xn--punycode", False),
        ("name-s3alias", False),
        ("", False),
        ("../escape", False),
    ],
)
def test_bucket_names_follow_s3_rules(name: str, valid: bool) -> None:
    assert is_valid_bucket_name(name) is valid


def capture_rules(s3: Any, bucket: str) -> list[dict[str, Any]]:
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    return [rule for rule in rules if rule["ID"] == CAPTURE_EXPIRATION_RULE_ID]


def test_captured_traffic_expires_after_the_retention_keeping_other_lifecycle_rules(
    local_aws: dict, unique_name: str
) -> None:
    """S3 API reference, PutBucketLifecycleConfiguration: the request replaces the
    bucket's whole lifecycle configuration, and a rule's Expiration Days is a positive
    integer, the objects' lifetime from their creation. So the bucket gets one rule for
    `data_capture/` with the retention asked for (the default's, then a new one on a
    second run, never two), and a rule someone else set stays."""
    s3 = s3_client()
    s3.create_bucket(Bucket=unique_name)
    theirs = {
        "ID": "OtherTeamLogs",
        "Filter": {"Prefix": "logs/"},
        "Status": "Enabled",
        "Expiration": {"Days": 7},
    }
    s3.put_bucket_lifecycle_configuration(
        Bucket=unique_name, LifecycleConfiguration={"Rules": [theirs]}
    )
    ensure_bucket(s3, unique_name, ACCOUNT)
    [rule] = capture_rules(s3, unique_name)
    assert rule["Filter"] == {"Prefix": "data_capture/"}
    assert rule["Status"] == "Enabled"
    assert rule["Expiration"] == {"Days": DEFAULT_CAPTURE_RETENTION_DAYS}

    ensure_bucket(s3, unique_name, ACCOUNT, capture_retention_days=30)
    [rule] = capture_rules(s3, unique_name)
    assert rule["Expiration"] == {"Days": 30}
    rules = s3.get_bucket_lifecycle_configuration(Bucket=unique_name)["Rules"]
    assert next(r for r in rules if r["ID"] == "OtherTeamLogs")["Expiration"] == {"Days": 7}


def test_a_retention_under_one_day_is_refused_before_the_bucket_is_touched(
    local_aws: dict, unique_name: str
) -> None:
    s3 = s3_client()
    with pytest.raises(BucketError, match="at least 1"):
        ensure_bucket(s3, unique_name, ACCOUNT, capture_retention_days=0)
    assert unique_name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
