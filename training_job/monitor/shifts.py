"""The family of distribution shifts the drift monitor is measured against.

One module for the benchmark (benchmarks/drift_detection.py) and the monitor's tests, so
both mean the same thing by "white balance, middle severity". Each shift turns a batch of
uint8 (N, 32, 32, 3) photos into the uploads a client would send after that change: a
list of (body, content type). Most re-encode as PNG, the staged training images' format,
so the upload format gives nothing away; `upscale` sends larger PNGs, `jpeg` JPEGs.

Every shift has three levels (low, middle, high), fixed here before any measurement from
what happens in the field, not chosen to fit the detectors:

  colour       white_balance   R gain 1+g, B gain 1-g (a warm cast), g = 0.05, 0.10, 0.20
               channel_swap    RGB sent as BGR by 25 %, 50 %, 100 % of the clients
               hue             hue rotated by 30°, 60°, 90° at constant luma (YIQ)
  geometry     rotation        tilted 10°, 20°, 30°, cropped to the inscribed square
               crop_zoom       digital zoom keeping 80 %, 65 %, 50 % of the side
  occlusion    occlusion       a black square over 10 %, 20 %, 30 % of the frame
  resolution   downscale       captured at 24, 16, 12 px (the endpoint resizes to 32)
               upscale         sent at 64, 96, 128 px (bicubic), resized back by the endpoint
  lighting     gamma           gamma 1.3, 1.6, 2.0 (darker mid-tones)
               night_noise     exposure x0.6, x0.4, x0.25 with sensor noise sigma 4, 6, 8
  compression  jpeg_recompress a JPEG round trip at quality 90, 70, 30, delivered as PNG
  CIFAR-10-C   gaussian_noise, defocus_blur, brightness, contrast, jpeg (uploaded as
               JPEG): Hendrycks & Dietterich's (2019) severities 3, 4, 5
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

Upload = tuple[bytes, str]
LEVELS = ("low", "middle", "high")


def encode(image: np.ndarray | Image.Image, image_format: str = "PNG", quality: int = 95) -> bytes:
    """One image as an upload body, the way a client encodes it."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format, quality=quality)
    return buffer.getvalue()


def as_png(images: np.ndarray | list[Image.Image]) -> list[Upload]:
    return [(encode(image), "image/png") for image in images]


def _clip(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _each(images: np.ndarray, change: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(change(Image.fromarray(image)).convert("RGB")) for image in images])


# ---- colour ---------------------------------------------------------------------------


def white_balance(images: np.ndarray, gain: float, rng: np.random.Generator) -> list[Upload]:
    gains = np.array([1.0 + gain, 1.0, 1.0 - gain], dtype=np.float32)
    return as_png(_clip(images.astype(np.float32) * gains))


def channel_swap(images: np.ndarray, share: float, rng: np.random.Generator) -> list[Upload]:
    swapped = images.copy()
    chosen = rng.random(len(images)) < share
    swapped[chosen] = images[chosen][..., ::-1]
    return as_png(swapped)


# RGB to YIQ (NTSC): Y is luma, I and Q span the colour plane, so rotating (I, Q) turns
# every hue by the same angle and leaves luma as it was.
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def hue(images: np.ndarray, degrees: float, rng: np.random.Generator) -> list[Upload]:
    angle = math.radians(degrees)
    rotate = np.array(
        [[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]]
    )
    transform = np.linalg.inv(_YIQ) @ rotate @ _YIQ
    return as_png(_clip(images.astype(np.float64) @ transform.T))


# ---- geometry, occlusion, resolution --------------------------------------------------


def rotation(images: np.ndarray, degrees: float, rng: np.random.Generator) -> list[Upload]:
    def tilt(image: Image.Image) -> Image.Image:
        size = image.size[0]
        turned = image.rotate(degrees, resample=Image.Resampling.BICUBIC)
        # The largest axis-aligned square inside the turned frame: no black corners.
        angle = math.radians(degrees)
        side = size / (abs(math.cos(angle)) + abs(math.sin(angle)))
        margin = (size - side) / 2
        box = (margin, margin, size - margin, size - margin)
        return turned.resize((size, size), Image.Resampling.BICUBIC, box=box)

    return as_png(_each(images, tilt))


def crop_zoom(images: np.ndarray, keep: float, rng: np.random.Generator) -> list[Upload]:
    def zoom(image: Image.Image) -> Image.Image:
        size = image.size[0]
        margin = size * (1.0 - keep) / 2
        box = (margin, margin, size - margin, size - margin)
        return image.resize((size, size), Image.Resampling.BICUBIC, box=box)

    return as_png(_each(images, zoom))


def occlusion(images: np.ndarray, area: float, rng: np.random.Generator) -> list[Upload]:
    covered = images.copy()
    size = images.shape[1]
    side = max(1, round(size * math.sqrt(area)))
    for image in covered:
        top, left = rng.integers(0, size - side + 1, 2)
        image[top : top + side, left : left + side] = 0
    return as_png(covered)


def downscale(images: np.ndarray, pixels: float, rng: np.random.Generator) -> list[Upload]:
    side = int(pixels)
    return as_png(
        [Image.fromarray(i).resize((side, side), Image.Resampling.BICUBIC) for i in images]
    )


def upscale(images: np.ndarray, pixels: float, rng: np.random.Generator) -> list[Upload]:
    side = int(pixels)
    return as_png(
        [Image.fromarray(i).resize((side, side), Image.Resampling.BICUBIC) for i in images]
    )


# ---- lighting, compression ------------------------------------------------------------


def gamma(images: np.ndarray, exponent: float, rng: np.random.Generator) -> list[Upload]:
    return as_png(_clip(255.0 * (images / 255.0) ** exponent))


_NIGHT_NOISE = {0.6: 4.0, 0.4: 6.0, 0.25: 8.0}


def night_noise(images: np.ndarray, exposure: float, rng: np.random.Generator) -> list[Upload]:
    sigma = _NIGHT_NOISE[exposure]
    dark = images.astype(np.float32) * exposure
    return as_png(_clip(dark + rng.normal(0.0, sigma, images.shape)))


def jpeg_recompress(images: np.ndarray, quality: float, rng: np.random.Generator) -> list[Upload]:
    round_trip = [
        Image.open(io.BytesIO(encode(image, "JPEG", int(quality)))).convert("RGB")
        for image in images
    ]
    return as_png(round_trip)


# ---- CIFAR-10-C (Hendrycks & Dietterich, 2019), severities 3-5 --------------------------


def gaussian_noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> list[Upload]:
    return as_png(_clip(images + rng.normal(0, sigma * 255, images.shape)))


def defocus_blur(images: np.ndarray, radius: float, rng: np.random.Generator) -> list[Upload]:
    # A Gaussian stands in for CIFAR-C's disk kernel (PIL has no disk filter).
    return as_png(_each(images, lambda image: image.filter(ImageFilter.GaussianBlur(radius))))


def brightness(images: np.ndarray, shift: float, rng: np.random.Generator) -> list[Upload]:
    return as_png(_clip(images.astype(np.float32) + shift * 255))


def contrast(images: np.ndarray, factor: float, rng: np.random.Generator) -> list[Upload]:
    means = images.astype(np.float32).mean(axis=(1, 2, 3), keepdims=True)
    return as_png(_clip((images - means) * factor + means))


def jpeg(images: np.ndarray, quality: float, rng: np.random.Generator) -> list[Upload]:
    return [(encode(image, "JPEG", int(quality)), "image/jpeg") for image in images]


@dataclass(frozen=True)
class Shift:
    name: str
    group: str
    levels: tuple[float, float, float]  # the parameter at low, middle and high severity
    apply: Callable[[np.ndarray, float, np.random.Generator], list[Upload]]

    def uploads(self, images: np.ndarray, level: int, rng: np.random.Generator) -> list[Upload]:
        """`images` as clients send them after this shift at `level` (0 low ... 2 high)."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        if level not in range(len(LEVELS)):
            raise ValueError(f"level must be 0 (low), 1 (middle) or 2 (high), got {level}")
        return self.apply(images, self.levels[level], rng)


SHIFTS: dict[str, Shift] = {
    shift.name: shift
    for shift in (
        Shift("white_balance", "colour", (0.05, 0.10, 0.20), white_balance),
        Shift("channel_swap", "colour", (0.25, 0.5, 1.0), channel_swap),
        Shift("hue", "colour", (30, 60, 90), hue),
        Shift("rotation", "geometry", (10, 20, 30), rotation),
        Shift("crop_zoom", "geometry", (0.8, 0.65, 0.5), crop_zoom),
        Shift("occlusion", "occlusion", (0.1, 0.2, 0.3), occlusion),
        Shift("downscale", "resolution", (24, 16, 12), downscale),
        Shift("upscale", "resolution", (64, 96, 128), upscale),
        Shift("gamma", "lighting", (1.3, 1.6, 2.0), gamma),
        Shift("night_noise", "lighting", (0.6, 0.4, 0.25), night_noise),
        Shift("jpeg_recompress", "compression", (90, 70, 30), jpeg_recompress),
        Shift("gaussian_noise", "CIFAR-10-C", (0.08, 0.09, 0.10), gaussian_noise),
        Shift("defocus_blur", "CIFAR-10-C", (1.0, 1.5, 2.0), defocus_blur),
        Shift("brightness", "CIFAR-10-C", (0.3, 0.4, 0.5), brightness),
        Shift("contrast", "CIFAR-10-C", (0.4, 0.3, 0.15), contrast),
        Shift("jpeg", "CIFAR-10-C", (58, 50, 40), jpeg),
    )
}
