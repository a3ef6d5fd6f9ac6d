"""A few real CIFAR-100 images staged in a bucket as `python -m training_job stage` leaves
them, and reading objects back (the local training runner's tests and the launcher's)."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import boto3
import numpy as np
from PIL import Image

from contract.manifest import LstEntry, format_lst
from training_job.data.manifests import Manifest

CLASSES = ("bicycle", "motorcycle")


FINE_LABELS = {8: 0, 48: 1}  # CIFAR-100 fine label -> our label


def sample_images(shared_data: Path, split: str, per_class: int) -> list[tuple[int, int, bytes]]:
    """(row, label, PNG bytes) for the first `per_class` images of each class in `split`."""
    with tarfile.open(shared_data / "cifar-100-python-vehicles.tar.gz") as archive:
        member = archive.extractfile(f"cifar-100-python/{split}")
        assert member is not None
        batch = pickle.load(member, encoding="bytes")
    picked: list[tuple[int, int, bytes]] = []
    taken = dict.fromkeys(FINE_LABELS.values(), 0)
    for row, fine in enumerate(batch[b"fine_labels"]):
        label = FINE_LABELS.get(fine)
        if label is None or taken[label] == per_class:
            continue
        taken[label] += 1
        pixels = np.asarray(batch[b"data"][row], dtype=np.uint8).reshape(3, 32, 32)
        png = io.BytesIO()
        Image.fromarray(pixels.transpose(1, 2, 0)).save(png, format="PNG")
        picked.append((row, label, png.getvalue()))
    return picked


def stage_sample(
    bucket: str, shared_data: Path, prefix: str = "", train: int = 3, test: int = 2
) -> Manifest:
    """What `python -m training_job stage` leaves in a bucket, for a few real images."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    counts: dict[str, dict[str, int]] = {}
    objects = 0
    for split, per_class in (("train", train), ("test", test)):
        entries = []
        for row, label, png in sample_images(shared_data, split, per_class):
            filename = f"{CLASSES[label]}_s_{row:06d}.png"
            s3.put_object(Bucket=bucket, Key=f"{prefix}{split}/{filename}", Body=png)
            entries.append(LstEntry(row, label, filename))
        s3.put_object(Bucket=bucket, Key=f"{prefix}{split}.lst", Body=format_lst(entries))
        counts[split] = {name: per_class for name in CLASSES}
        objects += len(entries) + 1
    manifest = Manifest(
        classes=CLASSES,
        counts=counts,
        source="tests",
        archive_sha256="0" * 64,
        content_sha256="0" * 64,
        objects=objects,
    )
    s3.put_object(Bucket=bucket, Key=f"{prefix}manifest.json", Body=manifest.to_json())
    return manifest


def keys_under(bucket: str, prefix: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def read_object(bucket: str, key: str) -> bytes:
    return bytes(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def tar_members(data: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {
            member.name: (tar.extractfile(member).read() if member.isfile() else None)  # type: ignore[union-attr]
            for member in tar
        }
