"""The report's photos and verdict: which photos are picked, bounded memory, bad sources."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import numpy as np
import pytest

from tests.training_job.monitor.conftest import Vehicles, png
from training_job import model_code
from training_job.monitor.detectors import Finding
from training_job.monitor.gallery import (
    FIRST_GALLERIES,
    GALLERY_PHOTOS,
    LATEST_GALLERIES,
    Galleries,
    Gallery,
    baseline_photos,
    least_confident,
    most_unusual,
    unusualness,
)
from training_job.monitor.report import WindowResult, verdict


def test_unusualness_is_the_distance_to_the_nearest_baseline_photos() -> None:
    reference = np.zeros((10, 4))
    reference[:, 0] = np.arange(10)
    scores = unusualness(np.array([[0.0, 0, 0, 0], [0, 30, 0, 0]]), reference)
    assert scores[0] == pytest.approx(np.mean([0, 1, 2, 3, 4]))
    assert scores[1] > scores[0]


def test_the_most_unusual_photos_come_first(vehicles: Vehicles) -> None:
    pixels = vehicles.test_images[:20]
    embeddings = np.zeros((20, 3))
    embeddings[7] = [50, 0, 0]  # far from every baseline embedding
    photos = most_unusual(pixels, embeddings, np.zeros((30, 8)), np.full((20, 2), 0.5), ["a", "b"])
    assert len(photos) == GALLERY_PHOTOS
    assert photos[0].png == png(pixels[7])
    assert photos[0].caption.startswith("distance 50.00")


def test_doubtful_photos_are_the_least_confident_below_the_threshold() -> None:
    probabilities = np.array([[0.99, 0.01], [0.6, 0.4], [0.45, 0.55], [0.95, 0.05]])
    rows, below = least_confident(np.zeros((4, 32, 32, 3)), probabilities, 0.93, ["a", "b"])
    assert rows == [2, 1] and below == 2
    assert least_confident(np.zeros((0, 32, 32, 3)), np.zeros((0, 2)), 0.93, ["a"]) == ([], 0)


def test_galleries_keep_the_first_and_the_latest_in_bounded_memory() -> None:
    galleries = Galleries()
    for index in range(100):
        galleries.add(Gallery(index))
    kept = [g.index for g in galleries.kept]
    assert kept == [*range(FIRST_GALLERIES), *range(100 - LATEST_GALLERIES, 100)]
    assert galleries.dropped == 100 - FIRST_GALLERIES - LATEST_GALLERIES


def test_baseline_photos_from_a_folder_skip_what_is_not_an_image(
    tmp_path: Path, vehicles: Vehicles
) -> None:
    imaging = model_code.imaging()
    for number, image in enumerate(vehicles.train_images[:5]):
        (tmp_path / f"{number}.png").write_bytes(png(image))
    (tmp_path / "fake.png").write_bytes(b"not a png at all")
    (tmp_path / "huge.png").write_bytes(b"\0" * (2 << 20))  # over the size limit: not read
    (tmp_path / "notes.txt").write_text("ignored")
    photos, note = baseline_photos(str(tmp_path), imaging, count=50)
    assert len(photos) == 5 and "random sample of 5" in note


@pytest.mark.parametrize(
    "source", ["", "/nonexistent/folder", "s3://", "s3://no-such-bucket-here/train/"]
)
def test_no_baseline_photos_is_a_note_not_an_error(
    local_aws: dict[str, str], source: str, tmp_path: Path
) -> None:
    photos, note = baseline_photos(source or None, model_code.imaging())
    assert photos == [] and note.startswith("no baseline photos")


def test_baseline_photos_from_s3(
    local_aws: dict[str, str], unique_name: str, vehicles: Vehicles
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    for number, image in enumerate(vehicles.train_images[:20]):
        s3.put_object(Bucket=unique_name, Key=f"train/{number}.png", Body=png(image))
    photos, note = baseline_photos(f"s3://{unique_name}/train/", model_code.imaging())
    assert len(photos) == GALLERY_PHOTOS and f"s3://{unique_name}/train/" in note


def _window(index: int, alert: bool, detector: str = "output", p: float = 0.5) -> WindowResult:
    start = datetime(2026, 11, 24, 9, tzinfo=UTC) + timedelta(minutes=30 * index)
    finding = Finding(detector, "class_mix", 1.0, p, 0.01, p_adjusted=p, alert=alert)
    return WindowResult(
        index,
        start,
        start + timedelta(minutes=29),
        50,
        50,
        0,
        0,
        0.1,
        {},
        [0.5] * 5,
        {},
        [finding],
        None,
    )


def test_the_verdict_says_what_since_when_and_how_sure() -> None:
    calm = [_window(i, False) for i in range(4)]
    assert verdict(calm, 0.01)[0].startswith("No drift: none of the 4 windows from 2026-11-24")
    inputs = calm[:2] + [_window(i, True, "input", 1e-6) for i in (2, 3)]
    said = verdict(inputs, 0.01)
    assert said[0].startswith("The photos changed (class mix) but the model's answers did not")
    assert "since the window 2026-11-24 10:00 to 10:29 UTC" in said[0]
    assert said[1].startswith("How sure: 2 of 4 windows alerted")
    assert verdict([], 0.01)[0].startswith("No verdict")
