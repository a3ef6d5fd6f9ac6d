"""`train --include-reviewed`: the photos people labelled, checked and pinned for one job.

The review command (training_job/review/reviewed.py) writes its answers into the
workflow's bucket: a `.lst` manifest at contract.decisions.REVIEWED_MANIFEST_KEY (label =
index in the staged class order; "neither" is never written) and the photos it names
under REVIEWED_IMAGES_PREFIX, each a copy of the uploaded object. Before
a job starts, this module reads that manifest once and refuses it, with the reason,
when it is missing, too large, malformed or empty, names a class the model does not
have, names a photo that is not there or is over the endpoint's size limit, or names a
staged train/test image (by file name, or by content: the ETag of a test image). The
job then checks pixels against the test split itself (training_job/code/data.py).

It then writes the exact bytes it checked to `models/<job>/input/reviewed.lst` (once,
never over another job's), the job's `reviewed_lst` channel: answers that arrive while
the job runs do not change what it trains on, and the SHA-256 that metrics.json records
names a file that stays beside the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from contract import shown
from contract.aws_errors import error_code
from contract.decisions import (
    REVIEWED_IMAGES_PREFIX,
    REVIEWED_MANIFEST_KEY,
    REVIEWED_MANIFEST_VARIABLE,
    REVIEWED_SHA256_VARIABLE,
)
from contract.images import MAX_IMAGE_BYTES
from contract.manifest import MAX_LST_BYTES, LstEntry, ManifestError, parse_lst
from training_job.errors import CommandError

SNAPSHOT_NAME = "reviewed.lst"
SHOWN_NAMES = 5  # an error lists this many offending names, then a count


class ReviewedError(CommandError):
    """The reviewed photos cannot be trained on: one line, exit status 1."""


@dataclass(frozen=True)
class CheckedManifest:
    bucket: str
    etag: str
    body: bytes
    entries: list[LstEntry]

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{REVIEWED_MANIFEST_KEY}"

    @property
    def images_uri(self) -> str:
        return f"s3://{self.bucket}/{REVIEWED_IMAGES_PREFIX}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def environment(self) -> dict[str, str]:
        """What the job is told about the manifest it gets (recorded in metrics.json)."""
        return {REVIEWED_MANIFEST_VARIABLE: self.uri, REVIEWED_SHA256_VARIABLE: self.sha256}


def snapshot_key(models_prefix: str, job_name: str) -> str:
    return f"{models_prefix}{job_name}/input/{SNAPSHOT_NAME}"


def read_reviewed(
    s3: Any, bucket: str, classes: tuple[str, ...], staged_prefix: str
) -> CheckedManifest:
    """The bucket's reviewed manifest, checked as the module doc says."""
    uri = f"s3://{bucket}/{REVIEWED_MANIFEST_KEY}"
    try:
        head = s3.head_object(Bucket=bucket, Key=REVIEWED_MANIFEST_KEY)
    except ClientError as error:
        if error_code(error) in {"404", "NoSuchKey", "NotFound"}:
            raise ReviewedError(
                f"{uri} not found: no photo has been reviewed yet (answer the review queue "
                "with `python -m training_job review`), or train without --include-reviewed"
            ) from error
        raise
    if head["ContentLength"] > MAX_LST_BYTES:
        raise ReviewedError(f"{uri} is {head['ContentLength']} bytes, over {MAX_LST_BYTES}")
    response = s3.get_object(Bucket=bucket, Key=REVIEWED_MANIFEST_KEY)
    body = response["Body"].read(MAX_LST_BYTES + 1)
    try:
        entries = parse_lst(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ReviewedError(f"{uri}: not UTF-8 text: {error}") from error
    except ManifestError as error:
        raise ReviewedError(f"{uri}: {error}") from error
    if not entries:
        raise ReviewedError(f"{uri} lists no photos: nothing to add")
    for number, entry in enumerate(entries, start=1):
        if entry.label >= len(classes):
            raise ReviewedError(
                f"{uri} line {number}: label {entry.label} names no class of "
                f"{','.join(classes)} (a photo that is neither is not training data)"
            )
    reviewed = CheckedManifest(bucket, response["ETag"], body, entries)
    images = _listing(s3, bucket, REVIEWED_IMAGES_PREFIX)
    _refuse_missing_or_large(reviewed, images)
    _refuse_staged_images(s3, reviewed, images, staged_prefix)
    return reviewed


def pin(s3: Any, reviewed: CheckedManifest, key: str) -> str:
    """Write the checked bytes to `key` unless something is there; return its URI."""
    try:
        s3.put_object(Bucket=reviewed.bucket, Key=key, Body=reviewed.body, IfNoneMatch="*")
    except ClientError as error:
        if error_code(error) in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
            raise ReviewedError(
                f"s3://{reviewed.bucket}/{key} exists: a job of this name was started "
                "before; choose another --job-name"
            ) from error
        raise
    return f"s3://{reviewed.bucket}/{key}"


def _listing(s3: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    """Object name below `prefix` -> its listing entry (Size, ETag)."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"][len(prefix) :]] = item
    return found


def _some(names: list[str]) -> str:
    listed = ", ".join(shown(name) for name in names[:SHOWN_NAMES])
    return listed + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")


def _refuse_missing_or_large(reviewed: CheckedManifest, present: dict[str, Any]) -> None:
    missing = [e.filename for e in reviewed.entries if e.filename not in present]
    if missing:
        raise ReviewedError(
            f"{reviewed.uri} names {len(missing)} photo(s) not under {reviewed.images_uri}: "
            f"{_some(missing)}"
        )
    large = [e.filename for e in reviewed.entries if present[e.filename]["Size"] > MAX_IMAGE_BYTES]
    if large:
        raise ReviewedError(
            f"{reviewed.uri} names {len(large)} photo(s) over {MAX_IMAGE_BYTES} bytes, the "
            f"endpoint's limit: {_some(large)}"
        )


def _refuse_staged_images(
    s3: Any, reviewed: CheckedManifest, images: dict[str, Any], staged_prefix: str
) -> None:
    """A reviewed photo must be a new upload, never a staged image: the same name is
    refused for both splits, the same bytes (ETag) for the test split."""
    names = {entry.filename for entry in reviewed.entries}
    for split in ("test", "train"):
        staged = _listing(s3, reviewed.bucket, f"{staged_prefix}{split}/")
        clash = sorted(names & set(staged))
        if clash:
            raise ReviewedError(
                f"{reviewed.uri} names {len(clash)} photo(s) with the name of a staged {split} "
                f"image: {_some(clash)}; reviewed photos must be new uploads"
            )
        if split == "test":
            test_etags = {item["ETag"] for item in staged.values()}
            copies = sorted(name for name in names if images[name]["ETag"] in test_etags)
            if copies:
                raise ReviewedError(
                    f"{reviewed.uri} names {len(copies)} photo(s) whose bytes are a test "
                    f"image's: {_some(copies)}; the test split is never trained on"
                )
