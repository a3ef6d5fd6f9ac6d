"""How an image becomes the model's input, for training and inference alike.

This file runs inside SageMaker's containers (next to train.py and inference.py) and
here; training and serving call the same functions, so an uploaded photo is converted
exactly as the training images were.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

IMAGE_SIZE = 32  # CIFAR-100's 32×32; larger uploads are resized to it
# Refuse images whose header claims more pixels than this before decoding them:
# a small PNG claiming 50,000 × 50,000 pixels must not allocate 7.5 GB.
MAX_IMAGE_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """The bytes are not an image this model can read (named so callers map it to 4xx)."""


def open_image(data: bytes) -> Image.Image:
    """Decode image bytes, refusing empty input, non-images and decompression bombs."""
    if not data:
        raise ImageDecodeError("empty body: expected image bytes")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageDecodeError(
                f"image of {width}x{height} pixels is over the limit of {MAX_IMAGE_PIXELS}"
            )
        image.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"image refused as a decompression bomb: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"not a readable image: {error}") from error
    return image


def to_array(image: Image.Image) -> np.ndarray:
    """Any mode and size to uint8 RGB, IMAGE_SIZE × IMAGE_SIZE, shape (H, W, 3)."""
    if image.mode in ("RGBA", "LA", "P"):
        # Composite transparency on white, the way a viewer shows it, not on black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = image.convert("RGB")
    if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
        rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def decode(data: bytes) -> np.ndarray:
    """Image bytes to the uint8 (32, 32, 3) array the model's transforms start from."""
    return to_array(open_image(data))
