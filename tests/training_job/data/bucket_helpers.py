"""What a bucket `ensure_bucket` made or fixed must have (test_bucket.py, test_stage.py):
private, encrypted, TLS-only and EventBridge-enabled."""

from __future__ import annotations

import json
from typing import Any

import boto3

from training_job.data.bucket import TLS_ONLY_SID, tls_only_statement


def assert_settings(s3: Any, bucket: str) -> None:
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert tls_only_statement(bucket) in policy["Statement"]
    assert [s["Sid"] for s in policy["Statement"]].count(TLS_ONLY_SID) == 1
    assert eventbridge_configuration(bucket, s3.meta.region_name) == {}


def eventbridge_configuration(bucket: str, region: str) -> Any:
    """The bucket's EventBridgeConfiguration as moto stores it. moto's
    GetBucketNotificationConfiguration leaves it out of its answer (an emulator gap), so
    this reads moto's AWS Config view of the bucket, which carries it."""
    config = boto3.client("config", region_name=region)
    items = config.batch_get_resource_config(
        resourceKeys=[{"resourceType": "AWS::S3::Bucket", "resourceId": bucket}]
    )["baseConfigurationItems"]
    notifications = json.loads(
        items[0]["supplementaryConfiguration"]["BucketNotificationConfiguration"]
    )
    return notifications["configurations"].get("EventBridgeConfiguration")
