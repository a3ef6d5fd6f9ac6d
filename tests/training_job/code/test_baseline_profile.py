"""baseline_profile.py: input statistics on images with known answers, and the baseline files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contract import baseline as baseline_format
from tests.training_job.monitor.conftest import Vehicles, png
from training_job import model_code
from training_job.monitor.baseline import Baseline, BaselineError


def test_flat_grey_image_has_no_contrast_colour_edges_or_noise() -> None:
    grey = np.full((1, 32, 32, 3), 128, dtype=np.uint8)
    values = model_code.profile().input_statistics(grey)
    assert values["brightness"][0] == pytest.approx(128 / 255, abs=1e-4)
    for name in ("contrast", "saturation", "colourfulness", "sharpness", "noise"):
        assert values[name][0] == pytest.approx(0.0, abs=1e-6), name


def test_noise_raises_the_noise_estimate_by_its_standard_deviation() -> None:
    rng = np.random.default_rng(0)
    noisy = np.clip(128 + rng.normal(0, 10, (4, 32, 32, 3)), 0, 255).astype(np.uint8)
    noise = model_code.profile().input_statistics(noisy)["noise"]
    # Immerkær's estimate of sigma, in luma units (colour noise averages down in luma).
    expected = 10 / 255 * np.sqrt(0.299**2 + 0.587**2 + 0.114**2)
    assert np.allclose(noise, expected, rtol=0.15)


def test_blur_lowers_sharpness_and_pure_red_is_saturated(vehicles: Vehicles) -> None:
    profile = model_code.profile()
    images = vehicles.test_images[:20]
    padded = np.pad(images.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = np.mean(
        [padded[:, dy : dy + 32, dx : dx + 32] for dy in range(3) for dx in range(3)], axis=0
    )
    sharp = profile.input_statistics(images)["sharpness"]
    soft = profile.input_statistics(blurred.astype(np.uint8))["sharpness"]
    assert (soft < sharp).all()
    red = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert profile.input_statistics(red)["saturation"][0] == pytest.approx(1.0)


def test_statistics_refuse_arrays_that_are_not_uint8_rgb_batches() -> None:
    with pytest.raises(ValueError, match="uint8 images"):
        model_code.profile().input_statistics(np.zeros((32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8 images"):
        model_code.profile().input_statistics(np.zeros((2, 32, 32, 3), dtype=np.float32))


def test_write_baseline_writes_a_profile_the_monitor_loads(
    model_dir: Path, vehicles: Vehicles
) -> None:
    baseline = Baseline.from_dir(model_dir)
    # Answers and embeddings from the 200 held-out images only; input statistics and
    # upload sizes from all 1,000 training images (conftest writes it as train.py does).
    assert baseline.count == 200
    assert baseline.classes == ["bicycle", "motorcycle"]
    document = json.loads((model_dir / "baseline.json").read_text())
    assert document["format_version"] == 3 and document["input_count"] == 1000
    assert baseline.embeddings.shape == (200, document["embedding_dim"])
    assert np.allclose(baseline.probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert baseline.content_types == {"image/png": 1000}
    assert baseline.upload_bytes is not None and len(baseline.upload_bytes) == 1000
    assert set(baseline.statistics) == set(model_code.profile().STATISTICS)
    expected = model_code.profile().input_statistics(vehicles.train_images)
    for name, values in baseline.statistics.items():
        assert np.allclose(values, expected[name], atol=1e-6), name
    assert not list(model_dir.glob("*.tmp"))


def test_the_writers_document_is_one_the_shared_reader_reads(model_dir: Path) -> None:
    """What the writer writes and what both monitors read (contract.baseline) are one format."""
    assert model_code.profile().FORMAT_VERSION in baseline_format.READABLE_VERSIONS
    parsed = baseline_format.loads((model_dir / baseline_format.BASELINE_FILE).read_bytes(), "w")
    assert parsed.format_version == model_code.profile().FORMAT_VERSION
    assert (parsed.count, parsed.input_count) == (200, 1000)  # answers held out, inputs all
    assert sum(parsed.class_counts.values()) == 200


def test_a_baseline_written_before_format_3_is_still_read(
    model_dir: Path, vehicles: Vehicles
) -> None:
    # Formats 1 and 2: no input_count, every statistic from the validation images.
    net, config = model_code.model().load_model(model_dir)
    held_out = vehicles.train_images[800:]
    sizes = [len(png(image)) for image in held_out]
    document, embeddings = model_code.profile().build_baseline(net, config, held_out, sizes)
    assert document["input_count"] == 200  # no input images given: the validation ones
    del document["input_count"], document["input_statistics"]["red_blue"]
    document["format_version"] = 2
    older = Baseline.from_document(document, embeddings, "v2")
    assert older.count == 200 and len(older.statistics["brightness"]) == 200
    assert "red_blue" not in older.statistics


def test_a_baseline_whose_parts_disagree_on_input_count_is_refused(model_dir: Path) -> None:
    document = json.loads((model_dir / "baseline.json").read_text())
    embeddings = np.load(model_dir / "baseline_embeddings.npy")
    cases = {
        "every input statistic needs 999 values": {"input_count": 999},
        "input_count must be at least 2": {"input_count": 1},
        "input_count is not a number": {"input_count": "many"},
        "upload_bytes has 3 values, not input_count 1000": {"upload_bytes": [1, 2, 3]},
    }
    for message, change in cases.items():
        with pytest.raises(BaselineError, match=message):
            Baseline.from_document({**document, **change}, embeddings, "bad")


def test_write_baseline_refuses_bad_input_and_writes_nothing(
    model_dir: Path, vehicles: Vehicles, tmp_path: Path
) -> None:
    net, config = model_code.model().load_model(model_dir)
    profile = model_code.profile()
    images = vehicles.test_images[:4]
    with pytest.raises(ValueError, match="one per image"):
        profile.write_baseline(tmp_path, net, config, images, [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        profile.write_baseline(tmp_path, net, config, images[:1], None)
    with pytest.raises(ValueError, match="2 byte sizes for 4 input-profile images"):
        profile.write_baseline(tmp_path, net, config, images, None, images, [1, 2])
    with pytest.raises(ValueError, match="at least 2 input-profile images"):
        profile.write_baseline(tmp_path, net, config, images, None, images[:1], None)
    assert list(tmp_path.iterdir()) == []
    profile.write_baseline(tmp_path, net, config, images, None)
    document = json.loads((tmp_path / "baseline.json").read_text())
    assert document["upload_bytes"] is None and document["content_types"] is None
    assert len(png(images[0])) > 0


def test_opponent_colour_moments_measure_the_cast_and_the_colour_contrast() -> None:
    profile = model_code.profile()
    red = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    values = profile.input_statistics(red)
    assert values["red_green"][0] == pytest.approx(1.0)
    assert values["yellow_blue"][0] == pytest.approx(0.5)
    assert values["red_green_contrast"][0] == pytest.approx(0.0, abs=1e-6)
    halves = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    halves[:, :16, :, 2] = 255  # top half blue, bottom half black
    values = profile.input_statistics(halves)
    assert values["yellow_blue"][0] == pytest.approx(-0.5)
    assert values["yellow_blue_contrast"][0] == pytest.approx(0.5)
    assert values["red_green"][0] == pytest.approx(0.0, abs=1e-6)


def test_red_blue_is_the_warm_cool_balance_and_a_channel_swap_reverses_it(
    vehicles: Vehicles,
) -> None:
    profile = model_code.profile()
    red = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert profile.input_statistics(red)["red_blue"][0] == pytest.approx(1.0)
    assert profile.input_statistics(red[..., ::-1].copy())["red_blue"][0] == pytest.approx(-1.0)
    photos = vehicles.test_images[:20]
    swapped = np.ascontiguousarray(photos[..., ::-1])
    assert np.allclose(
        profile.input_statistics(swapped)["red_blue"],
        -profile.input_statistics(photos)["red_blue"],
        atol=1e-6,
    )
