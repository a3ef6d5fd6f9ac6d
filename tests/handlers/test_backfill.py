"""The batch scorer's input: a malformed batch is refused with InvalidEvent naming what is
wrong, before any photo is read (the batch's child fails, and the results file names its
photos with that error). The scoring itself runs against the local AWS in
tests/local_aws/test_backfill.py."""

from __future__ import annotations

from typing import Any

import pytest

from contract.decisions import image_id
from handlers.backfill import MAX_BATCH_ITEMS, Batch
from handlers.errors import InvalidEvent

SETTINGS = {"bucket": "photos", "backfill": "b-1", "execution": "arn:x", "target_variant": ""}
ETAG = "0123456789abcdef0123456789abcdef"


def batch(items: Any = None, **settings: Any) -> dict[str, Any]:
    listed = [{"Key": "archive/a.png", "Etag": f'"{ETAG}"'}] if items is None else items
    return {"Items": listed, "BatchInput": {**SETTINGS, **settings}}


def test_a_listed_object_becomes_the_photo_of_its_version() -> None:
    parsed = Batch.parse(batch(redecide=True))
    [photo] = parsed.photos
    assert (photo.key, photo.etag) == ("archive/a.png", ETAG)
    assert photo.image == image_id("photos", "archive/a.png", ETAG)
    assert parsed.redecide is True and parsed.target_variant == ""


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("not a batch", "must be a JSON object"),
        (batch(items=[]), "Items must be a list of 1 to"),
        (batch(items=[{"Key": "k", "Etag": "e"}] * (MAX_BATCH_ITEMS + 1)), "Items must be"),
        ({"Items": [{"Key": "k", "Etag": "e"}]}, "no BatchInput"),
        (batch(backfill=""), "needs bucket, backfill and execution"),
        (batch(target_variant=7), "target_variant must be a variant name"),
        (batch(items=[{"Key": "k"}]), "not an S3 object with Key and Etag"),
    ],
    ids=["not-object", "empty", "too-many", "no-settings", "no-name", "bad-variant", "no-etag"],
)
def test_a_malformed_batch_is_refused_with_what_is_wrong(event: Any, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        Batch.parse(event)
