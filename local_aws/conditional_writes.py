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


PATCHES = [serialize_conditional_writes]
