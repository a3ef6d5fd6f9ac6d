"""moto gap: bucket-policy conditions are ignored, so a TLS-only Deny denied everything."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError


def test_a_tls_only_policy_leaves_the_bucket_usable_and_unconditional_denies_still_apply(
    local_aws: dict[str, str], unique_name: str
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    arn = f"arn:aws:s3:::{unique_name}"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Sid": "DenyWritesToLocked",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": f"{arn}/locked/*",
            },
        ],
    }
    s3.put_bucket_policy(Bucket=unique_name, Policy=json.dumps(policy))

    s3.put_object(Bucket=unique_name, Key="train/a.png", Body=b"x")
    assert s3.get_object(Bucket=unique_name, Key="train/a.png")["Body"].read() == b"x"
    with pytest.raises(ClientError) as denied:
        s3.put_object(Bucket=unique_name, Key="locked/b.png", Body=b"x")
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # The stored policy is unchanged: the condition is only skipped in evaluation.
    assert json.loads(s3.get_bucket_policy(Bucket=unique_name)["Policy"]) == policy
