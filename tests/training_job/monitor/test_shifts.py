"""training_job/monitor/shifts.py: the benchmark's shift family, on real photos, and the
input detectors on the colour shifts the luma-only statistics used to miss."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.training_job.monitor.conftest import Vehicles
from training_job import model_code
from training_job.monitor.baseline import Baseline
from training_job.monitor.detectors import InputStatisticsDetector, Window, holm
from training_job.monitor.shifts import LEVELS, SHIFTS

COLOUR_STATISTICS = {"red_green", "yellow_blue", "red_green_contrast", "yellow_blue_contrast"}


def decoded(uploads: list[tuple[bytes, str]]) -> np.ndarray:
    imaging = model_code.imaging()
    return np.stack([imaging.decode(body) for body, _ in uploads])


@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_every_shift_sends_decodable_uploads_that_move_further_with_severity(
    name: str, vehicles: Vehicles
) -> None:
    shift = SHIFTS[name]
    images = vehicles.test_images[:40]
    distances, sizes = [], []
    for level in range(len(LEVELS)):
        uploads = shift.uploads(images, level, np.random.default_rng(0))
        assert len(uploads) == len(images)
        assert {kind for _, kind in uploads} <= {"image/png", "image/jpeg"}
        pixels = decoded(uploads)
        assert pixels.shape == images.shape
        distances.append(float(np.abs(pixels.astype(float) - images).mean()))
        sizes.append(sum(len(body) for body, _ in uploads))
    if name == "upscale":
        # The endpoint resizes the larger uploads back to 32 px: what grows is the upload.
        assert sizes[0] < sizes[1] < sizes[2]
    else:
        assert 0 < distances[0] < distances[1] < distances[2], distances


def test_shifts_refuse_what_is_not_a_batch_of_uint8_photos() -> None:
    with pytest.raises(ValueError, match="uint8 images"):
        SHIFTS["hue"].uploads(np.zeros((32, 32, 3), np.uint8), 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8 images"):
        SHIFTS["hue"].uploads(np.zeros((2, 32, 32, 3)), 0, np.random.default_rng(0))
    photos = np.zeros((2, 32, 32, 3), np.uint8)
    for level in (-1, 3):
        with pytest.raises(ValueError, match="level must be"):
            SHIFTS["hue"].uploads(photos, level, np.random.default_rng(0))


@pytest.mark.parametrize(("name", "level"), [("white_balance", 1), ("hue", 1), ("channel_swap", 2)])
def test_colour_shifts_alert_on_the_colour_moments(
    name: str, level: int, model_dir: Path, vehicles: Vehicles
) -> None:
    """Issue 15: colours changed at constant brightness passed every input test."""
    detector = InputStatisticsDetector().fit(Baseline.from_dir(model_dir))
    images = vehicles.test_images[:150]
    uploads = SHIFTS[name].uploads(images, level, np.random.default_rng(0))
    pixels = decoded(uploads)
    statistics = model_code.profile().input_statistics(pixels)
    window_sizes = np.array([len(body) for body, _ in uploads], dtype=np.float64)
    window = Window(
        statistics, window_sizes, Counter(kind for _, kind in uploads), np.zeros((150, 2))
    )
    findings = holm(detector.test(window), alpha=0.01)
    assert {f.test for f in findings if f.alert} & COLOUR_STATISTICS
