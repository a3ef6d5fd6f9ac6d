"""serialize: read the image named by the event from S3 and return it base64-encoded.

Only the configured bucket (DATA_BUCKET) and key prefixes (ALLOWED_PREFIXES, default
`test/,train/,incoming/`) are served; the object's size is checked with HeadObject
before any byte is downloaded, and its magic bytes before it is returned.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from handlers.workflow_event import (
    ConfigurationError,
    ImageTooLarge,
    InvalidEvent,
    NotAnImage,
    WorkflowError,
    WorkflowEvent,
    aws_client,
    image_content_type,
    log,
    max_image_bytes,
)

DEFAULT_ALLOWED_PREFIXES = "test/,train/,incoming/"


class BucketNotAllowed(WorkflowError):
    """The event names a bucket other than DATA_BUCKET."""


class KeyNotAllowed(WorkflowError):
    """The key is outside ALLOWED_PREFIXES."""


class ImageNotFound(WorkflowError):
    """There is no such object (or it changed while it was being read)."""


def handler(event: object, context: object = None) -> dict[str, Any]:
    workflow_event = WorkflowEvent.parse(event)
    bucket, key = workflow_event.s3_bucket, workflow_event.s3_key
    check_location(bucket, key)
    image = read_image(bucket, key, max_image_bytes())
    workflow_event.image_data = base64.b64encode(image).decode("ascii")
    log("INFO", "image serialized", context, s3_key=key, bytes=len(image))
    return workflow_event.response()


def check_location(bucket: str, key: str) -> None:
    data_bucket = os.environ.get("DATA_BUCKET", "").strip()
    if not data_bucket:
        raise ConfigurationError("DATA_BUCKET is not set")
    if not key:
        raise InvalidEvent("the event has no s3_key")
    if bucket != data_bucket:
        raise BucketNotAllowed(f"bucket {bucket!r} is not the data bucket {data_bucket!r}")
    prefixes = allowed_prefixes()
    if not any(key.startswith(prefix) and len(key) > len(prefix) for prefix in prefixes):
        raise KeyNotAllowed(f"key {key!r} is not under one of {', '.join(prefixes)}")


def allowed_prefixes() -> list[str]:
    raw = os.environ.get("ALLOWED_PREFIXES", DEFAULT_ALLOWED_PREFIXES)
    prefixes = [prefix.strip() for prefix in raw.split(",") if prefix.strip()]
    if not prefixes:
        raise ConfigurationError("ALLOWED_PREFIXES names no prefix")
    return prefixes


def read_image(bucket: str, key: str, limit: int) -> bytes:
    from botocore.exceptions import ClientError

    client = aws_client("s3")
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] > limit:
            raise ImageTooLarge(
                f"s3://{bucket}/{key} is {head['ContentLength']} bytes; limit {limit}"
            )
        # IfMatch: the object read is the one whose size was just checked.
        response = client.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"])
        with response["Body"] as body:
            image: bytes = body.read(limit + 1)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        # Without s3:ListBucket, S3 answers 403 rather than 404 for a missing key.
        if code in ("404", "NoSuchKey", "403", "AccessDenied", "412", "PreconditionFailed"):
            raise ImageNotFound(f"s3://{bucket}/{key} was not found ({code})") from None
        raise
    if len(image) > limit:
        raise ImageTooLarge(f"s3://{bucket}/{key} is over the limit of {limit} bytes")
    if image_content_type(image) is None:
        raise NotAnImage(f"s3://{bucket}/{key} is not a PNG, JPEG, GIF, BMP or WebP image")
    return image
