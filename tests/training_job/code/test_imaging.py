"""imaging.decode: every upload format becomes uint8 (32, 32, 3); anything else is refused
with ImageDecodeError, never a crash or a huge allocation."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import zlib

import imaging
import numpy as np
import pytest
from PIL import Image

from tests.training_job.code.conftest import CODE_DIR


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(size: tuple[int, int] = (32, 32)) -> Image.Image:
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(x[None, :], y[:, None], 128 * np.ones((1, 1))), -1)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_png_decodes_losslessly() -> None:
    image = gradient()
    array = imaging.decode(encoded(image, "PNG"))
    assert array.dtype == np.uint8 and array.shape == (32, 32, 3)
    assert np.array_equal(array, np.asarray(image))


def test_a_jpeg_decodes_to_nearly_the_same_pixels() -> None:
    image = gradient()
    array = imaging.decode(encoded(image, "JPEG", quality=95))
    assert array.shape == (32, 32, 3)
    assert np.abs(array.astype(int) - np.asarray(image).astype(int)).mean() < 4


def test_grayscale_becomes_three_equal_channels() -> None:
    array = imaging.decode(encoded(gradient().convert("L"), "PNG"))
    assert array.shape == (32, 32, 3)
    assert np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(
        array[..., 1], array[..., 2]
    )


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 16, 32))
    array = imaging.decode(encoded(rgba, "PNG"))
    assert array[0, 0].tolist() == [0, 0, 255]
    assert array[0, 31].tolist() == [255, 255, 255]


def test_a_palette_image_decodes_to_its_colours() -> None:
    palette = gradient().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    array = imaging.decode(encoded(palette, "PNG"))
    assert array.shape == (32, 32, 3)
    assert np.array_equal(array, np.asarray(palette.convert("RGB")))


def test_a_large_photo_is_resized_to_32_by_32() -> None:
    array = imaging.decode(encoded(gradient((1600, 1200)), "JPEG"))
    assert array.shape == (32, 32, 3)
    # The gradient survives the resize: red grows left to right, green top to bottom.
    assert array[16, 31, 0] > array[16, 0, 0] and array[31, 16, 1] > array[0, 16, 1]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty body"),
        (b"hello, this is not an image", "not a readable image"),
        (bytes(range(256)) * 4, "not a readable image"),
        (b"\x89PNG\r\n\x1a\n", "not a readable image"),
    ],
)
def test_non_images_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(imaging.ImageDecodeError, match=message):
        imaging.decode(data)


def test_a_truncated_png_is_refused() -> None:
    data = encoded(gradient((64, 64)), "PNG")
    with pytest.raises(imaging.ImageDecodeError, match="not a readable image"):
        imaging.decode(data[: len(data) // 2])


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width × height RGB pixels (one compressed row)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 1000))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", row)
        + png_chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_refused_without_allocating() -> None:
    data = bomb_png(50_000, 50_000)
    assert len(data) < 200
    with pytest.raises(imaging.ImageDecodeError, match=r"decompression bomb|over the limit"):
        imaging.decode(data)


def test_the_bomb_is_refused_even_with_address_space_capped_at_512_mib() -> None:
    # 50,000² RGB pixels would need 7.5 GB: under a 512 MiB cap an attempt to allocate
    # them fails with MemoryError instead of the named refusal.
    script = textwrap.dedent(
        f"""
        import resource, sys
        sys.path.append({str(CODE_DIR)!r})
        import imaging
        resource.setrlimit(resource.RLIMIT_AS, (512 * 2**20, 512 * 2**20))
        try:
            imaging.decode(sys.stdin.buffer.read())
        except imaging.ImageDecodeError as error:
            print("refused:", error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=bomb_png(50_000, 50_000),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.startswith(b"refused:")


def test_an_image_just_under_the_pixel_limit_header_is_not_refused_as_a_bomb() -> None:
    # 6,000 × 6,000 is under MAX_IMAGE_PIXELS: it must fail only on its missing data.
    with pytest.raises(imaging.ImageDecodeError, match="not a readable image"):
        imaging.decode(bomb_png(6_000, 6_000))
