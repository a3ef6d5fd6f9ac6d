"""The familiarity check (training_job/code/familiarity.py): fitted on training photos,
calibrated on held-out ones, and carried beside the inference script's answer."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from contract.familiarity import parse_attributes
from tests import non_vehicle_photos, sample_model
from tests.training_job.monitor.conftest import Vehicles

familiarity_lib: ModuleType = sample_model.code_module("familiarity")
inference: ModuleType = sample_model.code_module("inference")
model_lib: ModuleType = sample_model.code_module("model")


@pytest.fixture(scope="module")
def fitted(model_dir: Path, vehicles: Vehicles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The monitor tests' small model (trained on the first 800 train photos) with its
    familiarity fitted on those and calibrated on the other 200, as train.py does."""
    directory = tmp_path_factory.mktemp("familiar") / "model"
    shutil.copytree(model_dir, directory)
    net, config = model_lib.load_model(directory)
    familiarity_lib.fit(
        net,
        config,
        vehicles.train_images[:800],
        vehicles.train_labels[:800],
        vehicles.train_images[800:],
    ).save(directory)
    return directory


def distances(directory: Path, images: np.ndarray) -> tuple[np.ndarray, object]:
    net, config = model_lib.load_model(directory)
    familiarity = familiarity_lib.load(directory)
    return familiarity.distances(net, model_lib.to_tensor(images, config)), familiarity


def test_ordinary_photos_count_as_familiar_at_about_the_calibrated_share(
    fitted: Path, vehicles: Vehicles
) -> None:
    held_out, familiarity = distances(fitted, vehicles.train_images[800:])
    assert familiarity.familiar_share == familiarity_lib.FAMILIAR_SHARE == 0.95
    assert familiarity.familiar(held_out).mean() >= 0.95  # by construction
    test, _ = distances(fitted, vehicles.test_images)  # never seen: about the same share
    assert familiarity.familiar(test).mean() >= 0.85


def test_noise_and_flat_photos_count_as_unfamiliar(fitted: Path) -> None:
    """Issue 23: photos of neither class (here sensor noise and flat colour, made with
    numpy) are told from the vehicles by the model's own features."""
    photos = non_vehicle_photos.procedural(60, seed=3)
    families = list(non_vehicle_photos.PROCEDURAL_FAMILIES)
    chosen = [i for i in range(60) if families[i % len(families)] in ("noise", "flat")]
    far, familiarity = distances(fitted, photos[chosen])
    assert (~familiarity.familiar(far)).mean() >= 0.8


def test_the_cut_is_the_conformal_quantile_of_the_held_out_distances() -> None:
    """familiar iff (1 + #{held-out >= d}) / (n + 1) > 1 - share: with 100 held-out photos
    and 95 %, no farther than the 5th farthest; with 10, no photo can be called unfamiliar."""
    calibration = np.arange(1.0, 101.0)
    familiarity = familiarity_lib.Familiarity(np.zeros((2, 1)), np.eye(1), calibration, 0.95)
    assert familiarity.threshold == 96.0
    assert familiarity.familiar(np.array([96.0, 96.5])).tolist() == [True, False]
    scores = familiarity.scores(np.array([0.5, 96.0, 96.5, 1000.0]))
    assert scores.tolist() == pytest.approx([1.0, 6 / 101, 5 / 101, 1 / 101])
    few = familiarity_lib.Familiarity(np.zeros((2, 1)), np.eye(1), np.arange(10.0), 0.95)
    assert math.isinf(few.threshold)


def test_the_saved_statistics_score_as_the_fitted_ones(fitted: Path, vehicles: Vehicles) -> None:
    net, config = model_lib.load_model(fitted)
    loaded = familiarity_lib.load(fitted)
    with np.load(fitted / familiarity_lib.FAMILIARITY_FILE, allow_pickle=False) as saved:
        assert set(saved.files) == {"means", "precision", "calibration", "familiar_share"}
    again, _ = distances(fitted, vehicles.train_images[800:])
    assert np.allclose(np.sort(again), loaded.calibration)
    assert (
        loaded.familiar(
            loaded.distances(net, model_lib.to_tensor(vehicles.test_images[:5], config))
        ).dtype
        == bool
    )


def test_the_answer_carries_familiarity_in_custom_attributes_and_the_body_stays_the_list(
    fitted: Path, vehicles: Vehicles
) -> None:
    loaded = inference.model_fn(str(fitted))
    png = sample_model.png_bytes(vehicles.test_images[0])
    prediction = inference.predict_fn(inference.input_fn(png, "image/png"), loaded)
    body, content_type = inference.output_fn(prediction, "application/json")
    assert content_type == "application/json"
    probabilities = json.loads(body)
    assert isinstance(probabilities, list) and len(probabilities) == 2
    parsed = parse_attributes(inference.custom_attributes_fn(prediction))
    assert parsed is not None
    score, familiar = parsed
    assert 0 < score <= 1
    assert familiar == (score > 1 - familiarity_lib.FAMILIAR_SHARE)
    # A batch (the local endpoint's micro-batches) gets one attribute per image.
    batch = inference.predict_fn(list(vehicles.test_images[:3]), loaded)
    assert all(parse_attributes(inference.custom_attributes_fn(p)) for p in batch)


def test_a_version_without_familiarity_answers_as_before_and_says_nothing_of_it(
    model_dir: Path, vehicles: Vehicles
) -> None:
    """Old model.tar.gz files stay readable: no familiarity.npz, no attribute (unknown)."""
    assert not (model_dir / familiarity_lib.FAMILIARITY_FILE).exists()
    loaded = inference.model_fn(str(model_dir))
    prediction = inference.predict_fn(vehicles.test_images[0], loaded)
    assert inference.custom_attributes_fn(prediction) == ""
    assert parse_attributes(inference.custom_attributes_fn(prediction)) is None
