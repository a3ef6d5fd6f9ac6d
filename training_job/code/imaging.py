"""How an image becomes the model's input, for training and inference alike.

This file runs inside SageMaker's containers (next to train.py and inference.py) and
here; training and serving call the same functions, so an uploaded photo is converted
exactly as the training images were.
"""

from __future__ import annotations

import io
import re
import struct

import numpy as np
from PIL import Image, ImageOps

IMAGE_SIZE = 32  # CIFAR-100's 32×32; larger uploads are resized to it

# The work one image may cost, checked from its header before any pixel is decoded.
# The model consumes 32×32 pixels, so these limits bound what the decoder must touch to
# get there (measured with benchmarks/decode_cost.py, one core):
# - JPEG decodes with reduction (libjpeg's DCT scaling, `Image.draft`): a 2.5 MB
#   4032×3024 phone photo comes out at 504×378 for 0.04 s of CPU and 4 MB. What is left
#   is the entropy decoding (proportional to the body, at most 6 MB) and, for a
#   progressive JPEG, libjpeg's whole-image coefficient buffer: at the 24 MP limit (a
#   6000×4000 camera photo, twice a phone's 12 MP) 0.22 s and 73 MB.
# - PNG cannot decode with reduction: every pixel is inflated, 4 bytes each for RGBA.
#   The 8.3 MP limit (a 3840×2160 screenshot, larger than any phone screen) costs at most
#   0.3 s and 66 MB. A 155 KB PNG declaring 6320×6320 RGBA (40 MP) cost 1.3 s and 900 MB
#   under the former single 40 MP limit; it is refused now, from its header.
#
# Pixels are not the only work a header can ask for; the structure is counted too, by
# walking it before Pillow parses it:
# - Each scan of a progressive JPEG makes libjpeg pass over every coefficient block of
#   the image, however few bytes the scan has: 20,000 empty scans (927 KB) declaring
#   6000x4000 pixels cost 36 s of CPU. A progressive JPEG from libjpeg or mozjpeg has 6
#   to 12 scans; 64 cost at most 0.1 s more at the 24 MP limit.
# - Each JPEG segment and PNG chunk is a step of Pillow's Python parser: 400,000 empty
#   PNG chunks (4.8 MB) cost 1.1 s. Real files have tens (a phone's EXIF, XMP, ICC and
#   MPF segments; a PNG's IDATs of 8 to 64 KB, so under 700 in 5 MiB); 4,096 cost 10 ms.
MAX_JPEG_PIXELS = 24_000_000
MAX_FULL_DECODE_PIXELS = 3840 * 2160
MAX_JPEG_SCANS = 64
MAX_JPEG_SEGMENTS = 4096
MAX_PNG_CHUNKS = 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The next JPEG marker: fill bytes (0xFF), then a code that is not a stuffed zero and not a
# restart marker (RST0-7 sit inside a scan's data and have no length), so a scan's
# entropy-coded data is skipped by the regular-expression engine, not by Python.
JPEG_MARKER = re.compile(rb"\xff+([^\x00\xd0-\xd7\xff])")
JPEG_END_OF_IMAGE = 0xD9
JPEG_START_OF_SCAN = 0xDA
JPEG_MARKERS_WITHOUT_LENGTH = (0x01, JPEG_END_OF_IMAGE)  # TEM and EOI
# Formats Pillow can decode with reduction (the MPO a phone camera writes is a JPEG).
REDUCIBLE_FORMATS = ("JPEG", "MPO")


class ImageDecodeError(ValueError):
    """The bytes are not an image this model can read (named so callers map it to 4xx)."""


class ImageTooLarge(ImageDecodeError):
    """The image declares more pixels, scans or chunks than decoding may cost (callers
    map it to 413)."""


def pixel_limit(image_format: str | None) -> int:
    return MAX_JPEG_PIXELS if image_format in REDUCIBLE_FORMATS else MAX_FULL_DECODE_PIXELS


def open_image(data: bytes) -> Image.Image:
    """Decode image bytes, refusing empty input, non-images and images whose declared size
    costs more than the limits above; a JPEG is decoded reduced to at least IMAGE_SIZE."""
    if not data:
        raise ImageDecodeError("empty body: expected image bytes")
    check_structure(data)
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        limit = pixel_limit(image.format)
        if width * height > limit:
            raise ImageTooLarge(
                f"{image.format} image of {width}x{height} pixels is over the limit of "
                f"{limit:,} pixels for that format; the model reads {IMAGE_SIZE}x{IMAGE_SIZE}, "
                "so send a smaller image"
            )
        if image.format in REDUCIBLE_FORMATS:
            # Scales by 1/2, 1/4 or 1/8 while keeping both sides at least IMAGE_SIZE.
            image.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))
        image.load()
        # Phones store the sensor's orientation and a tag saying how to turn it.
        upright = ImageOps.exif_transpose(image)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as error:
        # Pillow's own check in Image.open, for headers far over the limits above.
        raise ImageTooLarge(
            "image refused as a decompression bomb: its header declares over "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels"
        ) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageDecodeError(f"not a readable image: {_reason(error)}") from error
    return upright


def check_structure(data: bytes) -> None:
    """Refuse a JPEG with more scans or segments, or a PNG with more chunks, than the
    limits above, counting no further than the limit (a truncated or malformed structure
    is left to the decoder to name)."""
    if data.startswith(PNG_SIGNATURE):
        _check_png_chunks(data)
    elif data.startswith(b"\xff\xd8"):
        _check_jpeg_segments(data)


def _check_png_chunks(data: bytes) -> None:
    position, chunks = len(PNG_SIGNATURE), 0
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise ImageTooLarge(
                f"PNG image has more than {MAX_PNG_CHUNKS:,} chunks, the limit (an encoder "
                "writes tens): re-encode it"
            )
        if kind == b"IEND":
            return
        position += 12 + length  # length, type, data, CRC


def _check_jpeg_segments(data: bytes) -> None:
    """Walks the first image's markers (an MPO's later frames are never decoded)."""
    position, segments, scans = 2, 0, 0
    while (marker := JPEG_MARKER.search(data, position)) is not None:
        code = marker[1][0]
        position = marker.end()
        if code == JPEG_END_OF_IMAGE:
            return
        if code in JPEG_MARKERS_WITHOUT_LENGTH:
            continue
        segments += 1
        scans += code == JPEG_START_OF_SCAN
        if scans > MAX_JPEG_SCANS:
            raise ImageTooLarge(
                f"JPEG image has more than {MAX_JPEG_SCANS} scans, the limit (each costs a "
                "pass over the whole image, and an encoder writes at most 12): re-encode it"
            )
        if segments > MAX_JPEG_SEGMENTS:
            raise ImageTooLarge(
                f"JPEG image has more than {MAX_JPEG_SEGMENTS:,} segments, the limit (an "
                "encoder writes tens): re-encode it"
            )
        # The segment's length counts its own two bytes; a scan's data follows it, and
        # the search above skips that data to the next marker.
        position += max(int.from_bytes(data[position : position + 2], "big"), 2)


def _reason(error: Exception) -> str:
    """Pillow's message without object reprs (`cannot identify image file <_io.BytesIO
    object at 0x...>`): what went wrong, never the caller's object or bytes."""
    text = str(error)
    if text.startswith("cannot identify image file"):
        return "not a known image format"
    return text[:200]


def to_array(image: Image.Image) -> np.ndarray:
    """Any mode and size to uint8 RGB, IMAGE_SIZE × IMAGE_SIZE, shape (H, W, 3)."""
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    # Resized first, so the steps after it touch 32×32 pixels, not the upload's
    # millions (Pillow resizes RGBA premultiplied, so the composite below is the same).
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    if image.mode == "RGBA":
        # Composite transparency on white, the way a viewer shows it, not on black.
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode(data: bytes) -> np.ndarray:
    """Image bytes to the uint8 (32, 32, 3) array the model's transforms start from."""
    return to_array(open_image(data))
