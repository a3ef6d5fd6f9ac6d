"""The project's bucket: created if missing, and held to the same settings every run.

Private (all four public-access blocks), encrypted by default with SSE-S3 (AES256: the
ETag of a single-part upload stays the object's MD5, which staging compares against its
manifest, and no KMS key or per-request KMS cost is involved), TLS-only by policy,
sending its events to EventBridge (the workflow's trigger), and expiring the endpoint's
captured traffic (`data_capture/`) after a retention of days (a lifecycle rule).
"""

from __future__ import annotations

import json
import re
from typing import Any

from botocore.exceptions import ClientError

from contract.aws_errors import error_code
from training_job.serving.capture import CAPTURE_PREFIX

TLS_ONLY_SID = "DenyInsecureTransport"
# The lifecycle rule that expires captured traffic: people's photos and the model's
# answers, kept only as long as the monitor and a drift investigation need them.
CAPTURE_EXPIRATION_RULE_ID = "ExpireDataCapture"
DEFAULT_CAPTURE_RETENTION_DAYS = 90
# S3's rules for new bucket names (no dots: virtual-hosted TLS breaks on them).
_BUCKET_NAME = re.compile(r"(?!xn--)(?!sthree-)(?!amzn-s3-demo-)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


class BucketError(RuntimeError):
    """The bucket cannot be used: it belongs to someone else, lives in another region, or
    a setting was refused."""


def is_valid_bucket_name(name: str) -> bool:
    return bool(_BUCKET_NAME.fullmatch(name)) and not name.endswith(("-s3alias", "--ol-s3"))


def tls_only_statement(bucket: str) -> dict[str, Any]:
    return {
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def bucket_region(s3: Any, bucket: str, owner: dict[str, str] | None = None) -> str:
    """The region `bucket` lives in (GetBucketLocation answers from any region)."""
    try:
        answer = s3.get_bucket_location(Bucket=bucket, **(owner or {}))
    except ClientError as error:
        if error_code(error) == "NoSuchBucket":
            raise BucketError(
                f"bucket {bucket} does not exist: create it with `python -m training_job "
                "stage`, or name the project's bucket"
            ) from error
        raise
    location = answer.get("LocationConstraint")
    # S3 reports us-east-1 as no constraint, and the oldest eu-west-1 buckets as "EU".
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def require_region(s3: Any, bucket: str, owner: dict[str, str] | None = None) -> None:
    """Refuse a bucket outside the region of `s3`'s client: S3 sends its events to
    EventBridge only in the bucket's region, and SageMaker reads training data and model
    artifacts only from buckets in its own region, so every step must share one region."""
    region = s3.meta.region_name
    actual = bucket_region(s3, bucket, owner)
    if actual != region:
        raise BucketError(
            f"bucket {bucket} is in {actual}, but this command runs in {region}: run every "
            f"step in {actual} (export AWS_REGION={actual}, or --region {actual}; `sls deploy` "
            f"reads AWS_REGION too), or use a bucket in {region}"
        )


def ensure_bucket(
    s3: Any,
    bucket: str,
    account_id: str | None = None,
    capture_retention_days: int = DEFAULT_CAPTURE_RETENTION_DAYS,
) -> bool:
    """Create `bucket` if it is missing (in the client's region), then apply the settings,
    captured traffic expiring after `capture_retention_days`. Returns True if created. An
    existing bucket in another region is refused, untouched.

    `account_id` (the caller's, from STS) makes S3 refuse a bucket of that name that
    another account owns, instead of our settings being attempted on it.
    """
    if capture_retention_days < 1:  # S3's Expiration Days: a positive integer
        raise BucketError(f"capture retention of {capture_retention_days} days: at least 1")
    created = False
    owner = {"ExpectedBucketOwner": account_id} if account_id else {}
    try:
        s3.head_bucket(Bucket=bucket, **owner)
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404:
            _create(s3, bucket)
            created = True
        elif status == 403:
            raise BucketError(f"bucket {bucket!r} exists and is not ours (access denied)") from (
                error
            )
        else:
            raise
    if not created:
        require_region(s3, bucket, owner)
    _apply_settings(s3, bucket, owner)
    _expire_captures(s3, bucket, capture_retention_days, owner)
    return created


def _create(s3: Any, bucket: str) -> None:
    region = s3.meta.region_name
    arguments: dict[str, Any] = {"Bucket": bucket, "ObjectOwnership": "BucketOwnerEnforced"}
    if region and region != "us-east-1":
        # us-east-1 is S3's default location and refuses an explicit constraint.
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**arguments)
    except ClientError as error:
        code = error_code(error)
        if code == "BucketAlreadyOwnedByYou":
            return  # created by a concurrent run of ours between head and create
        if code == "BucketAlreadyExists":
            raise BucketError(f"bucket name {bucket!r} is taken by another account") from error
        raise


def _apply_settings(s3: Any, bucket: str, owner: dict[str, str]) -> None:
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
        **owner,
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
        **owner,
    )
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(_policy(s3, bucket, owner)), **owner)
    # The notification configuration is replaced as a whole: keep what others configured.
    notifications = s3.get_bucket_notification_configuration(Bucket=bucket, **owner)
    notifications.pop("ResponseMetadata", None)
    notifications["EventBridgeConfiguration"] = {}
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration=notifications, **owner
    )


def _expire_captures(s3: Any, bucket: str, days: int, owner: dict[str, str]) -> None:
    """Our lifecycle rule for `data_capture/`, the bucket's other rules kept:
    PutBucketLifecycleConfiguration replaces the whole configuration."""
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket, **owner)["Rules"]
    except ClientError as error:
        if error_code(error) != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    rules = [rule for rule in rules if rule.get("ID") != CAPTURE_EXPIRATION_RULE_ID]
    rules.append(
        {
            "ID": CAPTURE_EXPIRATION_RULE_ID,
            "Filter": {"Prefix": f"{CAPTURE_PREFIX}/"},
            "Status": "Enabled",
            "Expiration": {"Days": days},
        }
    )
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": rules}, **owner
    )


def _policy(s3: Any, bucket: str, owner: dict[str, str]) -> dict[str, Any]:
    """The bucket's policy with our TLS-only statement in it; other statements are kept."""
    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket, **owner)["Policy"])
    except ClientError as error:
        if error_code(error) != "NoSuchBucketPolicy":
            raise
        policy = {"Version": "2012-10-17", "Statement": []}
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    policy["Statement"] = [s for s in statements if s.get("Sid") != TLS_ONLY_SID]
    policy["Statement"].append(tls_only_statement(bucket))
    policy.setdefault("Version", "2012-10-17")
    return policy
