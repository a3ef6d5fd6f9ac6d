"""serialize: check the image named by the event in S3, and put it into the event when
it is small enough.

Only the configured bucket and key prefixes are served, up to the size limit, in the
accepted formats (handlers/image_source.py). An image up to INLINE_IMAGE_BYTES travels
base64 in `image_data`; a larger one (a phone photo) would push the state over Step
Functions' 256 KiB limit, so `image_data` stays empty and classify reads the image from
S3 by the event's `s3_bucket`/`s3_key`. Either way the image's format has been checked.
The read is of the upload the event names (its `s3_etag`, If-Match): a key uploaded over
since fails as ImageChanged.
"""

from __future__ import annotations

import base64
from typing import Any

from handlers.image_source import max_image_bytes, read_image
from handlers.json_log import log
from handlers.workflow_event import INLINE_IMAGE_BYTES, WorkflowEvent


def handler(event: object, context: object = None) -> dict[str, Any]:
    workflow_event = WorkflowEvent.parse(event)
    bucket, key = workflow_event.s3_bucket, workflow_event.s3_key
    image = read_image(
        bucket, key, max_image_bytes(), read_up_to=INLINE_IMAGE_BYTES, etag=workflow_event.s3_etag
    )
    # The decision's id names the upload read (an event without the trigger's ETag gets it here).
    workflow_event.s3_etag = image.etag
    workflow_event.image_data = (
        base64.b64encode(image.data).decode("ascii") if image.complete else ""
    )
    log(
        "INFO",
        "image serialized" if image.complete else "image left in S3 for classify",
        context,
        s3_key=key,
        bytes=image.size,
        content_type=image.content_type,
    )
    return workflow_event.response()
