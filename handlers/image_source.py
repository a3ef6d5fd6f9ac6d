"""Where the workflow's images are read from: the data bucket, under the allowed prefixes.

serialize reads an image here to put it into the event when it is small enough, and
only checks the format of a larger one; classify reads a larger one here itself, by the
event's s3_bucket/s3_key (the workflow event's claim check). Both apply the same rules,
from the same environment:

  DATA_BUCKET       the only bucket served
  ALLOWED_PREFIXES  the key prefixes served (default `test/,train/,incoming/`), which the
                    functions' IAM roles grant s3:GetObject on, and nothing else
  MAX_IMAGE_BYTES   the size limit, checked on the object's size before its body is read

Each image costs one GetObject with a Range: the answer's Content-Range gives the object's
whole size, so the size check and the bytes read are of the same object version, and no
more than the range is ever transferred.
"""

from __future__ import annotations

import os
from typing import Any

from contract import shown
from contract.aws_errors import error_code
from contract.images import FORMAT_NAMES, MAX_IMAGE_BYTES, SIGNATURE_BYTES, content_type_of
from handlers.aws_clients import aws_client
from handlers.errors import (
    ConfigurationError,
    ImageTooLarge,
    InvalidEvent,
    NotAnImage,
    WorkflowError,
)

DEFAULT_ALLOWED_PREFIXES = "test/,train/,incoming/"

# S3 calls must end inside serialize's 10 s and classify's 30 s Lambda timeouts, which
# botocore's defaults (60 s to connect, 60 s per read, up to 5 attempts) would outlast.
# One retry (standard mode, which waits at most 1 s first) covers a dropped connection or
# a 503 SlowDown, and S3 reads are idempotent: a call that stalls and is retried ends
# within 2 x (1 + 3) + 1 = 9 s. The read timeout bounds each wait for bytes, not the
# transfer: a 5 MB object in the same region streams in well under a second.
S3_CLIENT_CONFIG: dict[str, Any] = {
    "connect_timeout": 1,
    "read_timeout": 3,
    "retries": {"mode": "standard", "total_max_attempts": 2},
}


class BucketNotAllowed(WorkflowError):
    """The event names a bucket other than DATA_BUCKET."""


class KeyNotAllowed(WorkflowError):
    """The key is outside ALLOWED_PREFIXES."""


class ImageNotFound(WorkflowError):
    """There is no such object (or it changed while it was being read)."""


class ImageChanged(WorkflowError):
    """The key holds another upload now (its ETag is not the event's): this upload's bytes
    are gone, and the newer upload has a run of its own."""


class StoredImage:
    """What was read of one object: `data` is all of it when `complete`, else its head."""

    # A plain class, not a dataclass: `dataclasses` alone adds ~5 ms to a cold start.
    def __init__(self, data: bytes, size: int, content_type: str, etag: str = "") -> None:
        self.data = data
        self.size = size
        self.content_type = content_type
        self.etag = etag  # without its quotes

    @property
    def complete(self) -> bool:
        return len(self.data) == self.size


def check_location(bucket: str, key: str) -> None:
    data_bucket = os.environ.get("DATA_BUCKET", "").strip()
    if not data_bucket:
        raise ConfigurationError("DATA_BUCKET is not set")
    if not key:
        raise InvalidEvent("the event has no s3_key")
    if bucket != data_bucket:
        raise BucketNotAllowed(f"bucket {shown(bucket)} is not the data bucket {data_bucket!r}")
    prefixes = allowed_prefixes()
    if not any(key.startswith(prefix) and len(key) > len(prefix) for prefix in prefixes):
        raise KeyNotAllowed(f"key {shown(key)} is not under one of {', '.join(prefixes)}")


def allowed_prefixes() -> list[str]:
    raw = os.environ.get("ALLOWED_PREFIXES", DEFAULT_ALLOWED_PREFIXES)
    prefixes = [prefix.strip() for prefix in raw.split(",") if prefix.strip()]
    if not prefixes:
        raise ConfigurationError("ALLOWED_PREFIXES names no prefix")
    return prefixes


def read_image(
    bucket: str, key: str, limit: int, read_up_to: int | None = None, etag: str = ""
) -> StoredImage:
    """The image at s3://bucket/key, after check_location, the size limit and its magic
    bytes. Of an object larger than `read_up_to` only its first bytes are read, enough to
    check its format. With `etag`, only that upload is read (If-Match): ImageChanged when
    the key holds another one now."""
    from botocore.exceptions import ClientError

    check_location(bucket, key)
    where = f"s3://{bucket}/{shown(key)}"
    client = aws_client("s3", **S3_CLIENT_CONFIG)
    wanted = limit if read_up_to is None else min(limit, read_up_to)
    condition = {"IfMatch": f'"{etag}"'} if etag else {}
    try:
        # One request: a range of what could be kept; Content-Range says the whole size.
        response = client.get_object(
            Bucket=bucket, Key=key, Range=f"bytes=0-{wanted - 1}", **condition
        )
    except ClientError as error:
        code = error_code(error)
        if code in ("PreconditionFailed", "412"):
            raise ImageChanged(
                f"{where} is no longer the upload with ETag {etag} (uploaded over since)"
            ) from None
        if code == "InvalidRange":  # a range of an empty object: there is no first byte
            return StoredImage(b"", 0, image_content_type(b"", where))
        # Without s3:ListBucket, S3 answers 403 rather than 404 for a missing key.
        if code in ("404", "NoSuchKey", "403", "AccessDenied"):
            raise ImageNotFound(f"{where} was not found ({code})") from None
        raise
    with response["Body"] as body:
        size = object_size(response, where)
        if size > limit:
            raise ImageTooLarge(f"{where} is {size} bytes; limit {limit}")
        data: bytes = body.read(size if size <= wanted else SIGNATURE_BYTES)
    etag_read = str(response.get("ETag") or "").strip('"')
    return StoredImage(data, size, image_content_type(data, where), etag_read)


def object_size(response: dict[str, Any], where: str) -> int:
    """The whole object's size from a ranged GetObject's Content-Range (`bytes 0-N/SIZE`);
    an answer without one (the whole object) has it as its ContentLength."""
    content_range = str(response.get("ContentRange") or "")
    if not content_range:
        return int(response["ContentLength"])
    total = content_range.rpartition("/")[2]
    if not total.isdigit():
        raise WorkflowError(f"{where}: S3 answered an unusable Content-Range {content_range!r}")
    return int(total)


def image_content_type(data: bytes, what: str) -> str:
    """The content type of `data` (contract.images' formats), or NotAnImage naming `what`."""
    content_type = content_type_of(data)
    if content_type is None:
        raise NotAnImage(f"{what} is not a {FORMAT_NAMES} image")
    return content_type


def max_image_bytes() -> int:
    """MAX_IMAGE_BYTES from the environment (default and ceiling: the contract's limit,
    which the endpoint enforces too), validated."""
    raw = os.environ.get("MAX_IMAGE_BYTES", "").strip()
    if not raw:
        return MAX_IMAGE_BYTES
    try:
        limit = int(raw)
    except ValueError:
        raise ConfigurationError(
            f"MAX_IMAGE_BYTES must be a whole number, got {shown(raw)}"
        ) from None
    if not 0 < limit <= MAX_IMAGE_BYTES:
        raise ConfigurationError(
            f"MAX_IMAGE_BYTES must be between 1 and {MAX_IMAGE_BYTES} (what the endpoint "
            f"accepts), got {limit}"
        )
    return limit
