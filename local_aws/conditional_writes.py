"""Conditional writes are atomic, as on AWS.

DynamoDB's conditional UpdateItem/PutItem/DeleteItem and S3's PutObject with `If-Match` /
`If-None-Match` check their condition and write as one step on AWS: of two writers that
saw the same revision (or ETag), exactly one succeeds. moto's threaded server checks and
then writes without a lock, so two requests served at the same moment could both pass
the check, and the second would silently overwrite the first: the very thing the review
queue's conditional answers (training_job/review) rely on never happening. Here every
such write runs under one lock, so the check and the write cannot interleave with
another conditional write.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_WRITES = threading.RLock()  # reentrant: a write served inside another cannot deadlock


def _serialized(method: Any) -> Any:
    if getattr(method, "_serialized", False):
        return method  # installed once, however often the patches run

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _WRITES:
            return method(self, *args, **kwargs)

    locked._serialized = True  # type: ignore[attr-defined]
    return locked


def serialize_conditional_writes() -> None:
    from moto.dynamodb.responses import DynamoHandler
    from moto.s3.responses import S3Response

    # Every write, not only those with a condition: an unconditional write landing between
    # a conditional one's check and its write would be overwritten by it, which AWS's
    # atomic check-and-write never does.
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        setattr(DynamoHandler, name, _serialized(getattr(DynamoHandler, name)))
    S3Response.put_object = _serialized(S3Response.put_object)  # type: ignore[method-assign]


def check_copy_source_if_match() -> None:
    """Gap: moto's CopyObject checked `x-amz-copy-source-if-none-match` but ignored
    `x-amz-copy-source-if-match`; S3 copies only if the source's ETag matches, else 412
    PreconditionFailed (S3 API reference, CopyObject). The review store copies an answered
    photo with it, so a key uploaded over since is never learned from."""
    from urllib.parse import parse_qs, unquote, urlparse

    from moto.s3.exceptions import PreconditionFailed
    from moto.s3.responses import S3Response

    copy_object = S3Response.copy_object
    if getattr(copy_object, "_checks_if_match", False):
        return

    def copy_checked(self: Any) -> Any:
        wanted = self.headers.get("x-amz-copy-source-if-match")
        if wanted:
            source = urlparse(str(self.headers.get("x-amz-copy-source")))
            bucket, key = unquote(source.path).lstrip("/").split("/", 1)
            version = parse_qs(source.query).get("versionId", [None])[0]
            found = self.backend.get_object(bucket, key, version_id=version)
            if found is not None and wanted.strip('"') != found.etag.strip('"'):
                raise PreconditionFailed(failed_condition="x-amz-copy-source-If-Match")
        return copy_object(self)

    copy_checked._checks_if_match = True  # type: ignore[attr-defined]
    S3Response.copy_object = copy_checked  # type: ignore[method-assign]
