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

from benchmarks import decode_cost
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


def test_a_png_at_the_pixel_limit_is_not_refused_for_its_size() -> None:
    # 3840 × 2160 is the PNG limit: it must fail only on its missing data.
    with pytest.raises(imaging.ImageDecodeError, match="not a readable image"):
        imaging.decode(bomb_png(3840, 2160))


def rgba_bomb_png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # colour type 6: RGBA
    row = zlib.compress(b"\x00" + b"\x00" * 4 * width)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", row)


def test_a_png_declaring_6320_by_6320_rgba_is_refused_from_its_header() -> None:
    # Issue 12: such a PNG (155 KB) was under the former 40 MP limit and cost 1.3 s of
    # CPU and 900 MB to decode. PNG cannot decode with reduction, so its limit is lower.
    with pytest.raises(imaging.ImageTooLarge, match=r"PNG image of 6320x6320 pixels is over"):
        imaging.open_image(rgba_bomb_png(6320, 6320))


def test_a_jpeg_over_its_pixel_limit_is_refused_before_decoding() -> None:
    header = encoded(gradient((16, 16)), "JPEG")
    # The SOF0 frame header holds height then width, big-endian, 5 bytes after its marker.
    sof = header.index(b"\xff\xc0")
    claimed = header[: sof + 5] + struct.pack(">HH", 6000, 4001) + header[sof + 9 :]
    with pytest.raises(imaging.ImageTooLarge, match=r"JPEG image of 4001x6000 pixels is over"):
        imaging.open_image(claimed)


def upright_scene(size: tuple[int, int]) -> Image.Image:
    """Asymmetric, so every rotation and mirror of it differs: a gradient, red top-left."""
    image = gradient(size)
    width, height = size
    image.paste((255, 0, 0), (0, 0, width // 4, height // 4))
    return image


# EXIF orientation -> how the stored pixels are turned from upright (its inverse is
# what a viewer, and exif_transpose, applies).
STORED_AS = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,  # stored turned 90° counter-clockwise; shown turned back
    8: Image.Transpose.ROTATE_270,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
}


def with_orientation(upright: Image.Image, orientation: int, fmt: str, **options: object) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(upright.transpose(STORED_AS[orientation]), fmt, exif=exif, **options)


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_the_exif_orientation_is_applied_before_resizing(orientation: int) -> None:
    upright = upright_scene((96, 64))
    array = imaging.decode(with_orientation(upright, orientation, "PNG"))
    assert np.array_equal(array, imaging.to_array(upright))
    stored = imaging.to_array(upright.transpose(STORED_AS[orientation]))
    assert not np.array_equal(array, stored)  # what ignoring the tag would give


def test_a_phone_photo_decodes_reduced_upright_and_like_the_full_decode() -> None:
    # A 12 MP phone JPEG of several MB, stored sideways with orientation 6, as phones do.
    rng = np.random.default_rng(0)
    upright = upright_scene((3024, 4032))
    noise = rng.integers(-16, 17, (4032, 3024, 3), dtype=np.int16)
    upright = Image.fromarray((np.asarray(upright) + noise).clip(0, 255).astype(np.uint8))
    data = with_orientation(upright, 6, "JPEG", quality=92)
    assert len(data) > 2_000_000
    opened = imaging.open_image(data)
    # Decoded at 1/8 scale (DCT scaling), then turned upright: 3024×4032 -> 378×504.
    assert opened.size == (378, 504)
    reference = imaging.to_array(upright)
    difference = np.abs(imaging.to_array(opened).astype(int) - reference.astype(int))
    assert difference.mean() < 6, difference.mean()
    assert imaging.decode(data)[0, 0, 0] > 200  # the red corner is top-left again


def test_a_small_jpeg_is_reduced_no_further_than_32_pixels() -> None:
    assert imaging.open_image(encoded(gradient((200, 90)), "JPEG")).size == (100, 45)


def test_refusals_name_the_problem_without_object_reprs() -> None:
    with pytest.raises(imaging.ImageDecodeError) as raised:
        imaging.decode(b"GIF89a not quite")
    assert "object at 0x" not in str(raised.value) and "BytesIO" not in str(raised.value)


def test_a_progressive_jpeg_of_20000_empty_scans_is_refused_before_decoding() -> None:
    # Issue 24: each scan makes libjpeg pass over every block of the image, so 20,000
    # empty scans declaring 6000x4000 pixels cost 36 s of CPU and were answered 200.
    bomb = decode_cost.scan_bomb_jpeg(20_000)
    with pytest.raises(imaging.ImageTooLarge, match="more than 64 scans"):
        imaging.open_image(bomb)


def test_a_progressive_jpeg_at_the_scan_limit_decodes() -> None:
    at_limit = decode_cost.scan_bomb_jpeg(imaging.MAX_JPEG_SCANS, (640, 480))
    assert imaging.decode(at_limit).shape == (32, 32, 3)
    with pytest.raises(imaging.ImageTooLarge, match="scans"):
        imaging.decode(decode_cost.scan_bomb_jpeg(imaging.MAX_JPEG_SCANS + 1, (640, 480)))


def test_a_jpeg_flooded_with_comment_segments_is_refused() -> None:
    # Each segment is a step of Pillow's Python marker parser.
    jpeg = encoded(gradient(), "JPEG")
    comment = b"\xff\xfe\x00\x02"  # COM with no text
    flood = jpeg[:2] + comment * (imaging.MAX_JPEG_SEGMENTS + 1) + jpeg[2:]
    with pytest.raises(imaging.ImageTooLarge, match="segments"):
        imaging.open_image(flood)
    assert imaging.decode(jpeg[:2] + comment * 100 + jpeg[2:]).shape == (32, 32, 3)


def test_a_png_of_400000_empty_chunks_is_refused_before_decoding() -> None:
    # Issue 24: 4.8 MB of empty chunks cost 0.84 s of CPU (the victim's p99 went from
    # 15 ms to 1,040 ms).
    with pytest.raises(imaging.ImageTooLarge, match="more than 4,096 chunks"):
        imaging.open_image(decode_cost.chunk_flood_png(400_000))
    at_limit = decode_cost.chunk_flood_png(imaging.MAX_PNG_CHUNKS - 10)
    assert imaging.decode(at_limit).shape == (32, 32, 3)
