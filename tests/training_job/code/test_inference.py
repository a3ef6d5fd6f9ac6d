"""The inference script's four functions, called as SageMaker's container calls them."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import decode_cost
from contract import images as image_formats
from tests import sample_model

inference: ModuleType = sample_model.code_module("inference")
imaging: ModuleType = sample_model.code_module("imaging")
Split = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def test_images(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    return sample_model.load_split(shared_data / "cifar-100-python-vehicles.tar.gz", "test")


@pytest.fixture(scope="module")
def model_dir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    model_dir = tmp_path_factory.mktemp("model")
    sample_model.train_quick_model(shared_data / "cifar-100-python-vehicles.tar.gz", model_dir, 2)
    return model_dir


@pytest.fixture(scope="module")
def loaded(model_dir: Path) -> Any:
    return inference.model_fn(str(model_dir))


def encoded(
    image: np.ndarray, fmt: str, mode: str = "RGB", size: tuple[int, int] = (32, 32)
) -> bytes:
    picture = Image.fromarray(image).resize(size).convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    return buffer.getvalue()


def test_one_image_gives_class_probabilities_in_label_order(
    loaded: Any, test_images: Split
) -> None:
    images, _labels = test_images
    data = inference.input_fn(sample_model.png_bytes(images[0]), "image/png")
    body, content_type = inference.output_fn(inference.predict_fn(data, loaded), "application/json")
    probabilities = json.loads(body)
    assert content_type == "application/json"
    assert len(probabilities) == len(loaded.config.classes) == 2
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-6)


def test_a_batch_predicts_what_single_images_predict(loaded: Any, test_images: Split) -> None:
    images, _labels = test_images
    batch = [
        inference.input_fn(sample_model.png_bytes(image), "image/png") for image in images[:16]
    ]
    together = inference.predict_fn(batch, loaded)
    one_by_one = [inference.predict_fn(image, loaded) for image in batch]
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_model_fn_serves_the_folded_network_with_the_ensembles_answers(
    model_dir: Path, loaded: Any, test_images: Split
) -> None:
    """model_fn serves the members folded into one network (model.ServingNet), and
    predict_fn answers the 200 test photos as the saved ensemble does."""
    classifier = sample_model.code_module("model")
    assert isinstance(loaded.network, classifier.ServingNet)
    images, _labels = test_images
    net, config = classifier.load_model(model_dir)
    expected = classifier.predict(net, classifier.to_tensor(images, config))
    np.testing.assert_allclose(inference.predict_fn(images, loaded), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("fmt", "content_type", "mode", "size"),
    [
        ("PNG", "image/png", "RGB", (32, 32)),
        ("PNG", "image/png", "RGBA", (100, 60)),
        ("PNG", "image/PNG; charset=binary", "L", (32, 32)),
        ("PNG", "application/x-image", "P", (17, 17)),
        ("JPEG", "image/jpeg", "RGB", (640, 480)),
        ("JPEG", "application/x-image", "CMYK", (33, 33)),
    ],
)
def test_any_size_and_mode_is_converted_exactly_as_training_converts(
    test_images: Split, fmt: str, content_type: str, mode: str, size: tuple[int, int]
) -> None:
    body = encoded(test_images[0][3], fmt, mode, size)
    array = inference.input_fn(body, content_type)
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8
    np.testing.assert_array_equal(array, imaging.decode(body))


def test_png_input_keeps_the_archive_pixels(test_images: Split) -> None:
    image = test_images[0][5]
    np.testing.assert_array_equal(
        inference.input_fn(sample_model.png_bytes(image), "image/png"), image
    )


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"", "image/png", 400),
        (b"this is not an image", "image/png", 415),
        (b"GIF89a" + b"\x00" * 10, "image/jpeg", 415),
        (b"GIF89a" + b"\x00" * 10, "application/x-image", 415),
        (sample_model.claimed_size_png(50_000, 50_000), "image/png", 413),
        (b"\x89PNG\r\n\x1a\n", "application/x-image", 400),
        (b"\x89PNG\r\n\x1a\n", "image/jpeg", 415),  # the bytes say PNG
        (b"{}", "application/json", 415),
        (b"a,b", "text/csv", 415),
        (b"\x89PNG", "", 415),
        (b"\x89PNG", None, 415),
        (b"\x89PNG", "image/gif", 415),
    ],
)
def test_bad_input_raises_an_error_carrying_a_4xx_status(
    body: bytes, content_type: str | None, status: int
) -> None:
    with pytest.raises(inference.InferenceError) as raised:
        inference.input_fn(body, content_type)
    assert raised.value.status_code == status
    assert raised.value.message and str(raised.value) == raised.value.message


def test_accepted_content_types_are_the_contracts() -> None:
    png = sample_model.png_bytes(np.zeros((32, 32, 3), np.uint8))
    for content_type in image_formats.CONTENT_TYPES:
        if content_type in ("image/png", image_formats.GENERIC_CONTENT_TYPE):
            assert inference.input_fn(png, content_type).shape == (32, 32, 3)
    with pytest.raises(
        inference.InferenceError, match="send one of " + ", ".join(image_formats.CONTENT_TYPES)
    ):
        inference.input_fn(png, "image/webp")


def test_errors_echo_no_object_reprs_and_no_unbounded_input() -> None:
    huge = "image/" + "x" * 100_000
    with pytest.raises(inference.InferenceError) as raised:
        inference.input_fn(b"\x89PNG", huge)
    assert len(raised.value.message) < 300
    with pytest.raises(inference.InferenceError) as raised:
        inference.input_fn(b"\xff\xd8\xff" + b"not really a jpeg", "image/jpeg")
    assert "object at 0x" not in raised.value.message and "BytesIO" not in raised.value.message
    with pytest.raises(inference.InferenceError) as raised:
        inference.output_fn([0.5, 0.5], "text/" + "y" * 100_000)
    assert len(raised.value.message) < 300


def test_a_png_declaring_6320_by_6320_rgba_is_refused_with_413_before_decoding() -> None:
    # Issue 12: a 155 KB PNG of 6320x6320 transparent pixels cost 1.3 s and 900 MB.
    buffer = io.BytesIO()
    Image.new("RGBA", (6320, 6320)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 200_000
    with pytest.raises(inference.InferenceError, match="6320x6320 pixels is over") as raised:
        inference.input_fn(buffer.getvalue(), "image/png")
    assert raised.value.status_code == 413


def test_a_truncated_png_is_refused_with_400(test_images: Split) -> None:
    whole = encoded(test_images[0][0], "PNG", size=(64, 64))
    with pytest.raises(inference.InferenceError) as raised:
        inference.input_fn(whole[: len(whole) // 2], "image/png")
    assert raised.value.status_code == 400


def test_the_error_carries_the_status_and_message_the_server_answers() -> None:
    # serve.py answers an exception with an HTTP `status_code` with that status and its
    # `message`, and any other exception with 500; no toolkit class is needed.
    error = inference.InferenceError(415, "nope")
    assert (error.status_code, error.message, str(error)) == (415, "nope", "nope")
    assert type(error).__mro__[1] is Exception


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "",
        "*/*",
        "application/json",
        "application/json, text/csv",
        "text/csv, application/json",
        "application/*",
        "application/json, text/plain, */*",
        "text/csv;q=1, application/json;q=0.1",
        "APPLICATION/JSON; charset=utf-8",
        "application/json;q=0.5, application/*;q=0",  # the most specific range decides
        "text/html, */*;q=0.8",
    ],
)
def test_output_is_json_for_any_accept_that_admits_it(accept: str | None) -> None:
    assert inference.output_fn([0.25, 0.75], accept) == ("[0.25, 0.75]", "application/json")


@pytest.mark.parametrize(
    "accept",
    [
        "text/csv",
        "application/json;q=0",
        "application/json;q=0, */*",
        "application/json;q=0, application/*;q=0.5",
        "*/*;q=0",
        "application/*;q=0",
        "text/*, image/png",
        "application/json;q=nan",
        "application/json;q=2",
        "not a media range",
    ],
)
def test_an_accept_that_excludes_json_is_refused_with_406(accept: str) -> None:
    with pytest.raises(inference.InferenceError) as raised:
        inference.output_fn([0.25, 0.75], accept)
    assert raised.value.status_code == 406


def test_a_scan_bomb_is_a_413_not_a_200_after_seconds_of_cpu() -> None:
    with pytest.raises(inference.InferenceError) as raised:
        inference.input_fn(decode_cost.scan_bomb_jpeg(20_000), "image/jpeg")
    assert raised.value.status_code == 413
    assert "scans" in str(raised.value)
