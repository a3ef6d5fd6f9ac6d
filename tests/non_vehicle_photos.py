"""Photos that show neither a bicycle nor a motorcycle, 32x32 RGB, from sources available here.

Never the CIFAR archive (its test split is what the gate is measured on). Two sets, from
different sources, so that the familiarity check is not tuned to what it is judged on:

- `procedural(count, seed)`: made with numpy and PIL, in families a driver's wrong upload
  resembles: sensor noise, a blurred pocket (smooth blobs), gradients, flat colour,
  textures (checks, stripes), text on paper, shapes, a night sky, clouds, a parcel.
- `from_packages(count, seed)`: crops of the images that installed packages ship:
  matplotlib's sample data (a portrait, a wrapped present, a logo, two terrain elevation
  maps and an MRI slice rendered with colour maps) and scipy.ndimage's test image (dots).
  The held-out set: the method and its settings were chosen on procedural photos only.

Each image is drawn at a random size and position, then resized to 32x32 as the endpoint
resizes an upload (training_job/code/imaging.py's decode does the same for bigger photos).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 32
Rng = np.random.Generator


def _to_image(array: np.ndarray) -> np.ndarray:
    """A float (H, W, 3) array in [0, 1] (or uint8) to uint8 (32, 32, 3)."""
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    return np.asarray(
        Image.fromarray(array).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    )


def _noise(rng: Rng) -> np.ndarray:
    return _to_image(rng.random((SIZE, SIZE, 3)) * rng.uniform(0.3, 1) + rng.uniform(0, 0.3))


def _blurred_pocket(rng: Rng) -> np.ndarray:
    base = rng.random((8, 8, 3)) * rng.uniform(0.1, 0.6)
    image = Image.fromarray((base * 255).astype(np.uint8)).resize(
        (SIZE, SIZE), Image.Resampling.BICUBIC
    )
    return np.asarray(image.filter(ImageFilter.GaussianBlur(rng.uniform(1, 4))))


def _gradient(rng: Rng) -> np.ndarray:
    y, x = np.mgrid[0 : 1 : SIZE * 1j, 0 : 1 : SIZE * 1j]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * x + np.sin(angle) * y + 1.5) / 3
    start, end = rng.random(3), rng.random(3)
    return _to_image(start + ramp[..., None] * (end - start))


def _flat(rng: Rng) -> np.ndarray:
    colour = rng.random(3)
    return _to_image(colour + rng.normal(0, 0.03, (SIZE, SIZE, 3)))


def _texture(rng: Rng) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    period = rng.integers(2, 10)
    if rng.random() < 0.5:
        pattern = ((x // period + y // period) % 2).astype(float)
    else:
        angle = rng.uniform(0, np.pi)
        pattern = (np.sin((np.cos(angle) * x + np.sin(angle) * y) * np.pi / period) > 0) * 1.0
    one, two = rng.random(3), rng.random(3)
    return _to_image(one + pattern[..., None] * (two - one))


def _text(rng: Rng) -> np.ndarray:
    side = int(rng.integers(48, 128))
    paper = tuple(int(v) for v in rng.integers(160, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    image = Image.new("RGB", (side, side), paper)
    draw = ImageDraw.Draw(image)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 "
    for row in range(0, side, int(rng.integers(9, 16))):
        line = "".join(rng.choice(list(letters), 24))
        draw.text((int(rng.integers(-4, 4)), row), line, fill=ink)
    return _to_image(np.asarray(image))


def _shapes(rng: Rng) -> np.ndarray:
    image = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 6))):
        box = sorted(rng.integers(0, 64, 2).tolist()), sorted(rng.integers(0, 64, 2).tolist())
        corners = (box[0][0], box[1][0], box[0][1] + 4, box[1][1] + 4)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse(corners, fill=fill)
        else:
            draw.rectangle(corners, fill=fill)
    return _to_image(np.asarray(image))


def _night_sky(rng: Rng) -> np.ndarray:
    sky = np.zeros((64, 64, 3)) + rng.uniform(0, 0.12, 3)
    stars = rng.integers(0, 64, (int(rng.integers(10, 80)), 2))
    sky[stars[:, 0], stars[:, 1]] = rng.uniform(0.6, 1, (len(stars), 1))
    return _to_image(sky)


def _clouds(rng: Rng) -> np.ndarray:
    total = np.zeros((SIZE, SIZE))
    for octave in range(1, 5):
        cells = 2**octave
        layer = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
        total += np.asarray(layer.resize((SIZE, SIZE), Image.Resampling.BICUBIC)) / 255 / octave
    total = (total - total.min()) / (np.ptp(total) + 1e-9)
    sky, cloud = np.array([0.3, 0.5, 0.9]) * rng.uniform(0.5, 1), np.ones(3)
    return _to_image(sky + total[..., None] * (cloud - sky))


def _parcel(rng: Rng) -> np.ndarray:
    image = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    brown = (int(rng.integers(140, 200)), int(rng.integers(90, 140)), int(rng.integers(40, 90)))
    left, top = int(rng.integers(0, 16)), int(rng.integers(0, 16))
    right, bottom = int(rng.integers(48, 64)), int(rng.integers(48, 64))
    draw.rectangle((left, top, right, bottom), fill=brown)
    middle = (left + right) // 2
    draw.rectangle((middle - 3, top, middle + 3, bottom), fill=(200, 180, 140))
    return _to_image(np.asarray(image))


PROCEDURAL_FAMILIES: dict[str, Callable[[Rng], np.ndarray]] = {
    "noise": _noise,
    "blurred_pocket": _blurred_pocket,
    "gradient": _gradient,
    "flat": _flat,
    "texture": _texture,
    "text": _text,
    "shapes": _shapes,
    "night_sky": _night_sky,
    "clouds": _clouds,
    "parcel": _parcel,
}


def procedural(count: int, seed: int = 0) -> np.ndarray:
    """uint8 (count, 32, 32, 3): the families in turn, each image drawn from `seed`."""
    rng = np.random.default_rng(seed)
    makers = list(PROCEDURAL_FAMILIES.values())
    return np.stack([makers[index % len(makers)](rng) for index in range(count)])


def _package_sources() -> list[np.ndarray]:
    """The package images, as float RGB arrays in [0, 1]."""
    import matplotlib
    import scipy.ndimage
    from matplotlib import colormaps

    sample_data = Path(matplotlib.get_data_path()) / "sample_data"
    sources = []
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        with Image.open(sample_data / name) as image:
            sources.append(np.asarray(image.convert("RGB")) / 255.0)
    with Image.open(Path(scipy.ndimage.__file__).parent / "tests" / "dots.png") as image:
        sources.append(np.asarray(image.convert("RGB")) / 255.0)
    for name, key, colour_map in (
        ("topobathy.npz", "topo", "terrain"),
        ("jacksboro_fault_dem.npz", "elevation", "gist_earth"),
    ):
        with np.load(sample_data / name) as data:
            values = data[key].astype(float)
        values = (values - values.min()) / (np.ptp(values) + 1e-9)
        sources.append(colormaps[colour_map](values)[..., :3])
    with gzip.open(sample_data / "s1045.ima.gz") as file:
        slice_ = np.frombuffer(file.read(), np.uint16).astype(float).reshape(256, 256)
    sources.append(colormaps["bone"](slice_ / slice_.max())[..., :3])
    return sources


def from_packages(count: int, seed: int = 0) -> np.ndarray:
    """uint8 (count, 32, 32, 3): random square crops (a tenth to all of the shorter side)
    of the package images, each source in turn."""
    rng = np.random.default_rng(seed)
    sources = _package_sources()
    images = []
    for index in range(count):
        source = sources[index % len(sources)]
        height, width = source.shape[:2]
        side = int(rng.integers(max(8, min(height, width) // 10), min(height, width) + 1))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = source[top : top + side, left : left + side]
        images.append(_to_image((crop * 255).astype(np.uint8)))
    return np.stack(images)
