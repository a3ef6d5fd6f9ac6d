"""The familiarity check (training_job/code/familiarity.py): fitted on training photos,
calibrated on held-out ones, and carried beside the inference script's answer."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from contract.familiarity import format_attributes, parse_attributes
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


def served_copy(fitted: Path, tmp_path: Path, **changes: Any) -> Path:
    """A copy of the fitted model directory whose model.json says `changes`."""
    copy = tmp_path / "model"
    shutil.copytree(fitted, copy)
    written = json.loads((copy / model_lib.CONFIG_FILE).read_text())
    (copy / model_lib.CONFIG_FILE).write_text(json.dumps({**written, **changes}))
    return copy


TTA_SETTINGS = [
    {},  # as trained: flip TTA
    {"tta_flip": False},
    {"tta_translate": True},
    {"tta_flip": False, "tta_translate": True, "temperature": 0.5},
]
# Passes of 1 and 3 images run the grouped network (2 and 6 views with flip), 5 and 200
# the members apart (10 and 400 views with flip; 200 without).
PASSES = [1, 3, 5, 200]


def photos(vehicles: Vehicles) -> np.ndarray:
    """The 200 test photos and 20 non-vehicle ones, so that both flags occur."""
    return np.concatenate([vehicles.test_images, non_vehicle_photos.procedural(20, seed=3)])


@pytest.mark.parametrize("changes", TTA_SETTINGS)
def test_the_served_network_reads_the_fitted_features_from_its_one_pass(
    fitted: Path, vehicles: Vehicles, tmp_path: Path, changes: dict[str, Any]
) -> None:
    """ServingNet.forward_with_features taps the first conv group of the pass its logits
    take, for the photos themselves (not their mirrors or shifts): the features equal
    `familiarity.features` of the trained net, which the statistics were fitted on, within
    1e-5 of the largest feature (float rounding of the folded BatchNorms), in passes
    that run the members grouped and apart, with every TTA setting."""
    net, config = model_lib.load_model(served_copy(fitted, tmp_path, **changes))
    served = model_lib.for_serving(net)
    assert isinstance(served, model_lib.ServingNet)
    batch = model_lib.to_tensor(photos(vehicles), config)
    fitted_features = familiarity_lib.features(net, batch)
    tolerance = 1e-5 * np.abs(fitted_features).max()
    for size in PASSES:
        with torch.inference_mode():
            passes = [served.forward_with_features(part) for part in batch.split(size)]
            logits = torch.cat([answer for answer, _ in passes])
            served_features = familiarity_lib.as_features(torch.cat([tap for _, tap in passes]))
            torch.testing.assert_close(logits, served(batch), rtol=0, atol=1e-5)
        np.testing.assert_allclose(served_features, fitted_features, rtol=0, atol=tolerance)


@pytest.mark.parametrize("changes", TTA_SETTINGS)
def test_predict_fn_attaches_the_scores_and_flags_of_the_trained_nets_own_pass(
    fitted: Path, vehicles: Vehicles, tmp_path: Path, changes: dict[str, Any]
) -> None:
    """model_fn keeps no trained net beside the served one, and predict_fn's familiarity
    attributes are, character for character, those of the second pass over the trained
    net that it used to make (familiarity.distances), on the test photos and non-vehicle
    ones, one photo, a few and more than GROUPED_MAX_VIEWS views at a time; the
    probabilities stay the trained ensemble's."""
    directory = served_copy(fitted, tmp_path, **changes)
    loaded = inference.model_fn(str(directory))
    assert isinstance(loaded.network, model_lib.ServingNet)
    assert not any(isinstance(part, model_lib.Net) for part in loaded)
    images = photos(vehicles)
    expected_attributes, expected_probabilities = two_pass_answers(directory, images)
    parsed = [parse_attributes(attributes) for attributes in expected_attributes]
    assert {familiar for _score, familiar in filter(None, parsed)} == {True, False}
    for size in PASSES:
        answers = [
            answer
            for start in range(0, len(images), size)
            for answer in inference.predict_fn(images[start : start + size], loaded)
        ]
        assert [inference.custom_attributes_fn(a) for a in answers] == expected_attributes
        np.testing.assert_allclose(answers, expected_probabilities, rtol=0, atol=1e-5)


def test_a_net_served_unfolded_still_attaches_its_own_familiarity(
    fitted: Path, vehicles: Vehicles, tmp_path: Path
) -> None:
    """Where the BatchNorms cannot be folded (model.can_fold_norms), the trained net is
    served as it is and its familiarity comes from its own first group, as before."""
    directory = served_copy(fitted, tmp_path)
    state = torch.load(directory / model_lib.WEIGHTS_FILE, weights_only=True)
    state["members.1.features.2.norm1.weight"][0] = -1.0
    torch.save(state, directory / model_lib.WEIGHTS_FILE)
    loaded = inference.model_fn(str(directory))
    assert isinstance(loaded.network, model_lib.Net)
    images = photos(vehicles)
    expected_attributes, _ = two_pass_answers(directory, images)
    answers = inference.predict_fn(images, loaded)
    assert [inference.custom_attributes_fn(a) for a in answers] == expected_attributes


def two_pass_answers(directory: Path, images: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The attributes as predict_fn computed them before the one pass (a second pass
    over the unfolded trained net), and the trained net's probabilities."""
    net, config = model_lib.load_model(directory)
    familiarity = familiarity_lib.load(directory)
    batch = model_lib.to_tensor(images, config)
    distances = familiarity.distances(net, batch)
    attributes = [
        format_attributes(float(score), bool(familiar))
        for score, familiar in zip(
            familiarity.scores(distances), familiarity.familiar(distances), strict=True
        )
    ]
    return attributes, model_lib.predict(net, batch).numpy()
