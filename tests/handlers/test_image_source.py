"""What every handler that reads images applies: the accepted formats by their magic bytes,
and the size limit from the environment."""

from __future__ import annotations

import pytest

from contract.images import MAX_IMAGE_BYTES
from handlers.errors import ConfigurationError, NotAnImage
from handlers.image_source import image_content_type, max_image_bytes


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg"),
    ],
)
def test_images_are_recognised_by_their_magic_bytes(data: bytes, content_type: str) -> None:
    assert image_content_type(data, "upload") == content_type


@pytest.mark.parametrize(
    "data",
    [
        # The endpoint refuses these, so the handlers must too: one list (contract.images).
        b"GIF89a....",
        b"BM....",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"",
        b"%PDF-1.7",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
    ],
)
def test_anything_else_is_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImage, match="upload is not a PNG or JPEG image"):
        image_content_type(data, "upload")


def test_the_real_images_are_recognised(png_image: bytes, jpeg_image: bytes) -> None:
    assert image_content_type(png_image, "a") == "image/png"
    assert image_content_type(jpeg_image, "a") == "image/jpeg"


def test_max_image_bytes_defaults_to_5_mb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAX_IMAGE_BYTES", raising=False)
    assert max_image_bytes() == 5 * 1024 * 1024
    monkeypatch.setenv("MAX_IMAGE_BYTES", "1000")
    assert max_image_bytes() == 1000


@pytest.mark.parametrize("value", ["lots", "1.5", "0", "-3", "1e9", str(MAX_IMAGE_BYTES + 1)])
def test_a_malformed_max_image_bytes_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MAX_IMAGE_BYTES", value)
    with pytest.raises(ConfigurationError, match="MAX_IMAGE_BYTES"):
        max_image_bytes()
