"""`python -m training_job stage`: put the chosen CIFAR-100 classes into the bucket.

The layout it writes, under `s3://BUCKET/[PREFIX]`, is the SageMaker image-classification
reference's: `train/<filename>`, `test/<filename>` (lossless PNGs, pixels identical to the
archive), `train.lst`, `test.lst`, and `manifest.json` last. The same layout is kept under
the cache directory, and a run whose manifest matches both does nothing.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import hashlib
import io
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
from botocore.exceptions import ClientError
from PIL import Image
from tqdm import tqdm

from contract import shown
from contract.aws_errors import error_code
from contract.decisions import CLASSES
from contract.manifest import LstEntry, ManifestError, format_lst
from contract.s3 import S3UriError, normalise_prefix
from training_job.arguments import positive_int
from training_job.data import cifar
from training_job.data.bucket import (
    DEFAULT_CAPTURE_RETENTION_DAYS,
    BucketError,
    ensure_bucket,
    is_valid_bucket_name,
    require_region,
)
from training_job.data.manifests import (
    MANIFEST_NAME,
    SPLITS,
    Manifest,
    content_sha256,
    read_manifest,
    write_manifest,
)
from training_job.errors import CommandError, UsageError

DEFAULT_CLASSES = ",".join(CLASSES)
SOURCE_ENV = "SCONES_CIFAR_SOURCE"
DEFAULT_CACHE_DIR = Path(".cache/cifar")
UPLOAD_WORKERS = 16


@dataclass(frozen=True)
class StageReport:
    manifest: Manifest
    local_dir: Path
    built_locally: bool  # False when the cached local copy already matched
    uploaded: int
    deleted: int

    @property
    def already_staged(self) -> bool:
        return not self.built_locally and self.uploaded == 0 and self.deleted == 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stage",
        help="stage CIFAR-100 classes into the bucket (images, .lst files, manifest)",
        description=__doc__,
        epilog=f"official archive: {cifar.OFFICIAL_URL}\n"
        f"  (MD5 {cifar.KNOWN_MD5[cifar.OFFICIAL_URL]})\n"
        "exit status: 0 staged (or already staged), 1 data, download or AWS error, "
        "2 usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--source",
        metavar="URL|PATH",
        default=os.environ.get(SOURCE_ENV, cifar.OFFICIAL_URL),
        help="the CIFAR-100 python archive: an http(s) URL (downloaded, resumably, into the "
        "cache; the official URL must match its MD5) or a local .tar.gz (checked for layout "
        f"and sizes). Default: ${SOURCE_ENV} if set, else the official archive (below)",
    )
    parser.add_argument(
        "--classes",
        default=DEFAULT_CLASSES,
        help="comma-separated CIFAR-100 fine label names; a class's label in the .lst files "
        f"is its position in this list (default: {DEFAULT_CLASSES})",
    )
    parser.add_argument(
        "--bucket",
        required=True,
        help="the S3 bucket; created if missing, and made private, encrypted (SSE-S3), "
        "TLS-only and EventBridge-enabled either way",
    )
    parser.add_argument(
        "--capture-retention-days",
        type=positive_int,
        default=DEFAULT_CAPTURE_RETENTION_DAYS,
        metavar="DAYS",
        help="the bucket's lifecycle rule deletes the endpoint's captured traffic "
        "(data_capture/) this many days after it was written "
        f"(default: {DEFAULT_CAPTURE_RETENTION_DAYS})",
    )
    parser.add_argument(
        "--prefix",
        default="",
        help="key prefix for the layout, e.g. 'cifar/' gives cifar/train/... "
        "(default: none, keys start with train/)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help="where downloads and the local copy of the staged layout are kept "
        f"(default: {DEFAULT_CACHE_DIR}, relative to the current directory)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # A UsageError (exit 2), and AWS's errors, go to training_job/__main__.py as they are.
    try:
        report = stage(
            args.source,
            args.classes,
            args.bucket,
            args.prefix,
            args.cache_dir,
            capture_retention_days=args.capture_retention_days,
        )
    except (cifar.ArchiveError, cifar.DownloadError, BucketError, ManifestError, OSError) as error:
        raise CommandError(str(error)) from error
    location = f"s3://{args.bucket}/{prefix_option(args.prefix)}"
    counts = ", ".join(f"{split} {report.manifest.total(split)}" for split in SPLITS)
    if report.already_staged:
        print(f"already staged: {location} ({counts} images)")
    else:
        print(
            f"staged {location} ({counts} images): {report.uploaded} objects uploaded, "
            f"{report.deleted} stale deleted; local copy in {report.local_dir}"
        )
    return 0


def stage(
    source: str,
    classes: str,
    bucket: str,
    prefix: str,
    cache_dir: Path,
    s3: Any = None,
    capture_retention_days: int = DEFAULT_CAPTURE_RETENTION_DAYS,
) -> StageReport:
    """Stage `classes` from `source` into `s3://bucket/prefix` and the cache; see module doc."""
    # Everything is validated before anything is created: arguments, then whether the
    # bucket can be ours (read-only, before a 169 MB download), then the archive (read
    # whole into the local copy); only then is the bucket created and filled.
    class_names = parse_classes(classes)
    if not is_valid_bucket_name(bucket):
        raise UsageError(f"invalid bucket name {shown(bucket)}")
    prefix = prefix_option(prefix)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise UsageError(f"--cache-dir {shown(str(cache_dir))} is not a directory")
    if not cifar.is_url(source):
        if "://" in source:
            raise UsageError(f"--source {shown(source)}: only http(s) URLs or local paths")
        if not Path(source).is_file():
            raise UsageError(f"--source {shown(source)}: no such file")

    s3 = s3 or boto3.client("s3")
    account = boto3.client("sts").get_caller_identity()["Account"]
    _refuse_a_bucket_not_ours(s3, bucket, account)

    archive_path = cifar.fetch(source, cache_dir) if cifar.is_url(source) else Path(source)
    archive_sha256 = cifar.file_digest(archive_path, "sha256")
    local_dir = cache_dir / "staged" / bucket / f"prefix-{quote(prefix, safe='')}"
    manifest = _matching_local_copy(local_dir, class_names, source, archive_sha256)
    built = manifest is None
    if manifest is None:
        manifest = build_local_copy(archive_path, class_names, source, archive_sha256, local_dir)
    ensure_bucket(s3, bucket, account, capture_retention_days)
    uploaded, deleted = sync_to_bucket(s3, bucket, prefix, local_dir, manifest)
    return StageReport(manifest, local_dir, built, uploaded, deleted)


def _refuse_a_bucket_not_ours(s3: Any, bucket: str, account: str) -> None:
    """A read-only look at the bucket: a name another account holds, or a bucket in
    another region, fails here, before the download; a missing bucket is created by
    ensure_bucket once the data is valid."""
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account)
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 403:
            raise BucketError(
                f"bucket {shown(bucket)} exists and is not ours (access denied)"
            ) from error
        if status != 404:
            raise
    else:
        # An existing bucket in another region fails here too, before the download.
        require_region(s3, bucket, {"ExpectedBucketOwner": account})


def parse_classes(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if not text.strip() or not all(names):
        raise UsageError(f"--classes {shown(text)}: expected comma-separated class names")
    for name in names:
        if name not in cifar.FINE_LABEL_NAMES:
            close = difflib.get_close_matches(name, cifar.FINE_LABEL_NAMES, n=3)
            hint = f"did you mean: {', '.join(close)}?" if close else "no close match"
            raise UsageError(f"unknown class {shown(name)}; {hint}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UsageError(f"--classes lists {', '.join(duplicates)} more than once")
    if len(names) < 2:
        # The classifier tells classes apart: train refuses fewer than two, so stage does.
        raise UsageError(f"--classes {shown(text)}: name two or more classes")
    return names


def prefix_option(prefix: str) -> str:
    """--prefix by the one rule (contract.s3), a UsageError if it breaks it."""
    try:
        return normalise_prefix(prefix)
    except S3UriError as error:
        raise UsageError(f"--prefix {error}") from None


def local_md5s(local_dir: Path) -> dict[str, str]:
    """MD5 of every staged file in the local copy, by key relative to the prefix."""
    return {
        path.relative_to(local_dir).as_posix(): hashlib.md5(path.read_bytes()).hexdigest()
        for path in sorted(local_dir.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }


def _matching_local_copy(
    local_dir: Path, classes: tuple[str, ...], source: str, archive_sha256: str
) -> Manifest | None:
    """The local copy's manifest if it describes this staging and its files match it."""
    try:
        manifest = read_manifest(local_dir / MANIFEST_NAME)
    except (OSError, ManifestError):
        return None
    if (manifest.classes, manifest.source, manifest.archive_sha256) != (
        classes,
        source,
        archive_sha256,
    ):
        return None
    md5s = local_md5s(local_dir)
    if len(md5s) != manifest.objects or content_sha256(md5s) != manifest.content_sha256:
        return None
    return manifest


def encode_png(pixels: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def build_local_copy(
    archive_path: Path,
    classes: tuple[str, ...],
    source: str,
    archive_sha256: str,
    local_dir: Path,
) -> Manifest:
    """Write the layout into a temporary directory, then swap it in as `local_dir`."""
    archive = cifar.read_archive(archive_path)
    label_of = {archive.fine_label_names.index(name): label for label, name in enumerate(classes)}
    local_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = local_dir.parent / f".tmp-{local_dir.name}-{uuid.uuid4().hex[:8]}"
    try:
        counts: dict[str, dict[str, int]] = {}
        for split_name in SPLITS:
            split = archive.split(split_name)
            entries = [
                LstEntry(row, label_of[fine_label], filename)
                for row, (fine_label, filename) in enumerate(
                    zip(split.fine_labels, split.filenames, strict=True)
                )
                if fine_label in label_of
            ]
            filenames = [entry.filename for entry in entries]
            if len(set(filenames)) != len(filenames):
                raise cifar.ArchiveError(f"{split_name}: two images share a filename")
            (tmp_dir / split_name).mkdir(parents=True)
            for entry in tqdm(entries, desc=f"encode {split_name}", unit="img", disable=None):
                png = encode_png(cifar.row_to_image(split.data[entry.row]))
                (tmp_dir / split_name / entry.filename).write_bytes(png)
            (tmp_dir / f"{split_name}.lst").write_text(format_lst(entries))
            counts[split_name] = {
                name: sum(1 for entry in entries if entry.label == label)
                for label, name in enumerate(classes)
            }
        md5s = local_md5s(tmp_dir)
        manifest = Manifest(
            classes=classes,
            counts=counts,
            source=source,
            archive_sha256=archive_sha256,
            content_sha256=content_sha256(md5s),
            objects=len(md5s),
        )
        write_manifest(tmp_dir / MANIFEST_NAME, manifest)
        _swap_in(tmp_dir, local_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return manifest


def _swap_in(new_dir: Path, target: Path) -> None:
    # Two renames, so a crash leaves the old copy, the new one, or none: never a mix.
    old = target.parent / f".old-{target.name}-{uuid.uuid4().hex[:8]}"
    if target.exists():
        target.rename(old)
    new_dir.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _list_etags(s3: Any, bucket: str, prefix: str, delimiter: str = "") -> dict[str, str]:
    etags = {}
    paginator = s3.get_paginator("list_objects_v2")
    extra = {"Delimiter": delimiter} if delimiter else {}
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, **extra):
        for item in page.get("Contents", []):
            etags[item["Key"]] = item["ETag"].strip('"')
    return etags


def _bucket_manifest(s3: Any, bucket: str, key: str) -> Manifest | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error_code(error) in ("NoSuchKey", "404"):
            return None
        raise
    try:
        return Manifest.from_json(body)
    except ManifestError:
        return None  # not ours or damaged: restaged and replaced


def sync_to_bucket(
    s3: Any, bucket: str, prefix: str, local_dir: Path, manifest: Manifest
) -> tuple[int, int]:
    """Make the bucket hold the local copy; returns (objects uploaded, stale PNGs deleted)."""
    md5s = local_md5s(local_dir)
    existing = _list_etags(s3, bucket, prefix, delimiter="/")
    for split in SPLITS:
        existing.update(_list_etags(s3, bucket, f"{prefix}{split}/"))
    changed = [key for key, md5 in md5s.items() if existing.get(prefix + key) != md5]
    stale = [
        key
        for key in existing
        if key.startswith(tuple(f"{prefix}{split}/" for split in SPLITS))
        and key.endswith(".png")
        and key[len(prefix) :] not in md5s
    ]
    manifest_key = prefix + MANIFEST_NAME
    if not changed and not stale and _bucket_manifest(s3, bucket, manifest_key) == manifest:
        return 0, 0
    # Remove the old manifest first: until the new one is written, nothing in the bucket
    # claims to be a complete staging.
    s3.delete_object(Bucket=bucket, Key=manifest_key)

    def upload(key: str) -> None:
        body = (local_dir / key).read_bytes()
        s3.put_object(
            Bucket=bucket,
            Key=prefix + key,
            Body=body,
            ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode(),
            ContentType="image/png" if key.endswith(".png") else "text/plain",
        )

    with (
        ThreadPoolExecutor(max_workers=UPLOAD_WORKERS) as pool,
        tqdm(total=len(changed), desc="upload", unit="obj", disable=None) as bar,
    ):
        for future in as_completed([pool.submit(upload, key) for key in changed]):
            future.result()
            bar.update()
    for start in range(0, len(stale), 1000):
        batch = [{"Key": key} for key in stale[start : start + 1000]]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
    s3.put_object(
        Bucket=bucket,
        Key=manifest_key,
        Body=(local_dir / MANIFEST_NAME).read_bytes(),
        ContentType="application/json",
    )
    return len(changed), len(stale)
