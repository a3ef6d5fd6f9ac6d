"""Photos for the report, where a person would rather look than read: for each alerting
window, its most unusual photos (farthest from the baseline's in the model's embedding)
and its doubtful ones (below the threshold, the least confident first), beside a sample of
the baseline's own photos (the staged training split the baseline was profiled from).

Each photo is kept as a small PNG (the captured 32x32 image, a few kB) and written into
the page as a data: URI, so the report opens offline.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image

from contract.s3 import S3_SCHEME, S3UriError, parse_s3_prefix_uri

GALLERY_PHOTOS = 12  # per grid
NEIGHBOURS = 5  # the unusualness of a photo: mean distance to its 5 nearest baseline photos
# Galleries kept for a report: the first and the latest alerting windows (since when, and
# now); the ones between are counted, not shown.
FIRST_GALLERIES = 6
LATEST_GALLERIES = 6
MAX_BASELINE_LISTING = 20_000  # keys listed to sample baseline photos from
MAX_BASELINE_PHOTO_BYTES = 1 << 20
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Photo:
    png: bytes
    caption: str


@dataclass
class Gallery:
    """An alerting window's photos."""

    index: int
    unusual: list[Photo] = field(default_factory=list)
    doubtful: list[Photo] = field(default_factory=list)
    doubtful_total: int = 0


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def unusualness(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each row's mean Euclidean distance to its NEIGHBOURS nearest rows of `reference`."""
    if len(embeddings) == 0 or len(reference) == 0:
        return np.zeros(len(embeddings))
    a = embeddings.astype(np.float64)
    b = reference.astype(np.float64)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    distances = np.sqrt(np.maximum(squared, 0.0))
    k = min(NEIGHBOURS, distances.shape[1])
    return np.asarray(np.sort(distances, axis=1)[:, :k].mean(axis=1))


def most_unusual(
    pixels: np.ndarray,
    embeddings: np.ndarray,
    reference: np.ndarray,
    probabilities: np.ndarray,
    classes: list[str],
) -> list[Photo]:
    """The GALLERY_PHOTOS of `pixels` farthest from the baseline's embeddings."""
    scores = unusualness(embeddings, reference[:, : embeddings.shape[1]])
    order = np.argsort(-scores)[:GALLERY_PHOTOS]
    return [
        Photo(
            png_bytes(pixels[i]),
            f"distance {scores[i]:.2f}; {classes[int(probabilities[i].argmax())]} "
            f"{probabilities[i].max():.2f}",
        )
        for i in order
    ]


def least_confident(
    pixels: np.ndarray, probabilities: np.ndarray, threshold: float, classes: list[str]
) -> tuple[list[int], int]:
    """Rows below `threshold`, the least confident first (at most GALLERY_PHOTOS), and how
    many rows are below it in all."""
    confidences = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    below = np.flatnonzero(confidences < threshold)
    order = below[np.argsort(confidences[below], kind="stable")][:GALLERY_PHOTOS]
    return [int(i) for i in order], len(below)


def doubtful_photos(
    pixels: np.ndarray, probabilities: np.ndarray, classes: list[str]
) -> list[Photo]:
    return [
        Photo(png_bytes(image), f"{classes[int(row.argmax())]} {row.max():.2f}")
        for image, row in zip(pixels, probabilities, strict=True)
    ]


class Galleries:
    """The galleries a report keeps: the first FIRST_GALLERIES alerting windows and the
    latest LATEST_GALLERIES, in bounded memory however many windows alert."""

    def __init__(self) -> None:
        self.kept: list[Gallery] = []
        self.dropped = 0

    def add(self, gallery: Gallery) -> None:
        self.kept.append(gallery)
        if len(self.kept) > FIRST_GALLERIES + LATEST_GALLERIES:
            del self.kept[FIRST_GALLERIES]
            self.dropped += 1


def baseline_photos(
    source: str | None, imaging: Any, count: int = GALLERY_PHOTOS, seed: int = 0
) -> tuple[list[Photo], str]:
    """A random sample of `count` photos under `source` (s3://BUCKET/PREFIX or a local
    folder), and a note of where they came from or why there are none."""
    if not source:
        return [], "no baseline photos: give --baseline-images"
    rng = random.Random(seed)
    try:
        if source.startswith(S3_SCHEME):
            bucket, prefix = parse_s3_prefix_uri(source)
            s3 = boto3.client("s3")
            keys = []
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                keys += [
                    item["Key"]
                    for item in page.get("Contents", [])
                    if item["Key"].lower().endswith(IMAGE_SUFFIXES)
                    and item["Size"] <= MAX_BASELINE_PHOTO_BYTES
                ]
                if len(keys) >= MAX_BASELINE_LISTING:
                    break
            chosen = rng.sample(keys, min(count, len(keys)))
            bodies = [s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in chosen]
        else:
            folder = Path(source)
            files = sorted(
                p
                for p in folder.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES
                and p.is_file()
                and p.stat().st_size <= MAX_BASELINE_PHOTO_BYTES
            )
            chosen_files = rng.sample(files, min(count, len(files)))
            bodies = [p.read_bytes() for p in chosen_files]
    except (OSError, S3UriError, ClientError, BotoCoreError) as error:
        return [], f"no baseline photos: {source}: {error}"
    photos = []
    for body in bodies:
        try:
            photos.append(Photo(png_bytes(imaging.decode(body)), "baseline"))
        except imaging.ImageDecodeError:
            continue  # not an image after all: the grid shows the others
    if not photos:
        return [], f"no baseline photos: no readable image under {source}"
    return photos, f"a random sample of {len(photos)} photos from {source}"
