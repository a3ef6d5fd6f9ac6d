"""Answers as training data: `reviewed/reviewed.lst` and the images it names, in S3.

The manifest is one object that several reviewers update at once, so each update is a
read-modify-write made safe by S3's conditional PutObject: written with `If-Match` on the
ETag that was read (or `If-None-Match: *` when there was none yet), and retried from a
fresh read when S3 answers 412 PreconditionFailed (another reviewer wrote in between) or
409 ConditionalRequestConflict (a concurrent conditional write is in flight). S3 has
supported both headers on PutObject since 2024, atomically; the local AWS makes moto's
check-and-write atomic too (local_aws/conditional_writes.py). No line is ever lost, and
the manifest is a whole `.lst` at every moment, for `train --include-reviewed` to read.

Each answered photo is copied under REVIEWED_IMAGES_PREFIX with a plain name that is
unique per photo (a digest of its s3:// id, then its own name made safe), so two photos
both called IMG_0001.jpg stay two. "neither" names no class: it writes no line, and
replaces a line an earlier answer wrote. The `row` of a line is its position in the
manifest (a reviewed photo has no row in a CIFAR split).
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from typing import Any

from botocore.exceptions import ClientError

from contract.aws_errors import error_code
from contract.decisions import (
    ANSWER_NEITHER,
    CLASSES,
    REVIEWED_IMAGES_PREFIX,
    REVIEWED_MANIFEST_KEY,
)
from contract.manifest import LstEntry, format_lst, parse_lst

# Enough for dozens of reviewers answering at the same second; each retry re-reads.
MAX_ATTEMPTS = 50
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_CONFLICTS = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


class ManifestBusy(RuntimeError):
    """The manifest changed under every one of MAX_ATTEMPTS writes."""


def reviewed_filename(image: str) -> str:
    """The plain, unique name of photo `image` (s3://bucket/key) under REVIEWED_IMAGES_PREFIX."""
    digest = hashlib.sha256(image.encode()).hexdigest()[:16]
    name = _UNSAFE.sub("_", image.rsplit("/", 1)[-1]).lstrip(".")[-100:]
    return f"{digest}-{name}" if name else digest


class ReviewedManifest:
    """The answers' manifest and image copies in `bucket`, through the S3 client `s3`."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def record(self, image: str, key: str, answer: str, etag: str = "") -> None:
        """Photo `image` (at `key` in the bucket, the upload with ETag `etag` when given)
        was answered `answer`. A key uploaded over since holds another photo: S3 refuses the
        copy (PreconditionFailed), so that photo never becomes training data for this answer."""
        filename = reviewed_filename(image)
        if answer != ANSWER_NEITHER:
            self.s3.copy_object(
                Bucket=self.bucket,
                Key=REVIEWED_IMAGES_PREFIX + filename,
                CopySource={"Bucket": self.bucket, "Key": key},
                **({"CopySourceIfMatch": f'"{etag}"'} if etag else {}),
            )
        # The manifest's label is the class's index in CLASSES.
        label = CLASSES.index(answer) if answer in CLASSES else None
        self._update(filename, label)

    def forget(self, image: str) -> None:
        """Photo `image`'s answer was undone: its line goes (its image copy stays, unnamed)."""
        self._update(reviewed_filename(image), None)

    def entries(self) -> list[LstEntry]:
        return self._read()[0]

    def _update(self, filename: str, label: int | None) -> None:
        for attempt in range(MAX_ATTEMPTS):
            try:
                entries, etag = self._read()
            except ClientError as error:
                # A missing key reads as AccessDenied to a reviewer who may not list the
                # bucket (the least-privilege policy): creating it answers which it was.
                if error_code(error) not in ("AccessDenied", "403"):
                    raise
                entries, etag, unreadable = [], None, error
            else:
                unreadable = None
            kept = [entry for entry in entries if entry.filename != filename]
            if label is not None:
                kept.append(LstEntry(0, label, filename))
            if kept == entries:
                return  # nothing to change (an undo of "neither")
            body = format_lst(LstEntry(row, e.label, e.filename) for row, e in enumerate(kept))
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self.s3.put_object(
                    Bucket=self.bucket,
                    Key=REVIEWED_MANIFEST_KEY,
                    Body=body.encode(),
                    ContentType="text/plain",
                    **condition,
                )
                return
            except ClientError as error:
                if error_code(error) not in _CONFLICTS:
                    raise
                if unreadable is not None:
                    raise unreadable from error  # it exists, and may not be read
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # another reviewer wrote
        raise ManifestBusy(
            f"s3://{self.bucket}/{REVIEWED_MANIFEST_KEY} changed under each of "
            f"{MAX_ATTEMPTS} attempts to update it"
        )

    def _read(self) -> tuple[list[LstEntry], str | None]:
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=REVIEWED_MANIFEST_KEY)
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "404"):
                return [], None
            raise
        text = response["Body"].read().decode("utf-8")
        # parse_lst refuses a hand-edited or cut manifest rather than rewriting it wrongly.
        return parse_lst(text), response["ETag"]
