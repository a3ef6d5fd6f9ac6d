"""The baseline profile the drift monitor compares captured traffic against.

Runs inside the training container (train.py calls `write_baseline` after training) and
here (`python -m training_job monitor` computes the same input statistics on captured
images and the same embeddings with the same model). Written beside the model, so every
model carries the profile of the data it was trained and validated on:
  baseline.json             per-image input statistics, upload sizes and formats of every
                            image of the training split (train + validation); the
                            predicted-class mix and the probabilities of the validation
                            images
  baseline_embeddings.npy   float32 (N, D): the penultimate-layer embedding of each
                            validation image

The two halves have different references on purpose. The model's answers and embeddings
must come from held-out images: on the images it was fitted to, the model is more
confident and its embeddings tighter than on anything new, so clean traffic would look
drifted. The input statistics and upload sizes are computed from the pixels and bytes
alone, before any model, so every staged training image is as good a sample of "what
the camera sends" as a validation image, and using all of them makes the reference
sample ten times larger (about 1,000 images rather than 100). A two-sample test's power
grows with both samples; a mixture such as half of the clients changing their camera
moves each statistic's distribution only part of the way, and that needs the larger
reference to be seen in a window of 100 records.

Only numpy, torch and the sibling modules: it ships in the container's code directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import model as model_module
import numpy as np
import torch

from contract.baseline import BASELINE_FILE, EMBEDDINGS_FILE
from contract.threshold import DEFAULT_THRESHOLD

# 2: the opponent colour moments (red_green ... yellow_blue_contrast) joined the statistics.
# 3: the input statistics and upload sizes cover the whole training split ("input_count"
#    images), the answers and embeddings still the validation split ("count"); red_blue
#    joined the statistics. Versions 1 and 2 (every part from the validation split) are
#    still read.
FORMAT_VERSION = 3
# The workflow's threshold filter drops inferences below this confidence; the monitor
# watches the share of traffic that falls below it.
CONFIDENCE_THRESHOLD = DEFAULT_THRESHOLD
# Staged training images are lossless PNG (docs/architecture.md), so their byte sizes are
# PNG sizes: the baseline's upload format.
STAGED_CONTENT_TYPE = "image/png"
EMBED_BATCH = 256

# The per-image statistics, in the order reports show them. Each catches a different
# camera or pipeline change: exposure (brightness), flat or harsh lighting (contrast),
# colour casts or greyscale uploads (saturation, colourfulness), defocus or resizing
# (sharpness), sensor noise or heavy compression (noise).
# The last four are the first two colour moments (Stricker & Orengo, 1995) of the two
# opponent colour axes, red-green (R - G) and yellow-blue ((R + G) / 2 - B): their mean
# (the image's colour cast) and standard deviation (its colour contrast). With brightness
# and contrast, the same two moments of luma, they describe each image's colour
# distribution on all three axes. A white-balance error, a hue-rotating filter or a
# swapped channel order moves them while leaving luma, saturation and colourfulness alone.
# red_blue, the mean of R - B, is the image's warm-cool balance: the ratio of the red and
# blue gains is what a camera's white balance sets (green is its reference), and the axis
# along which daylight's colour temperature moves. It is also the one chromatic
# coordinate that an RGB/BGR mix-up (a common pipeline bug: OpenCV decodes to BGR)
# reverses outright, where the opponent axes each see only part of it: with u = R - B and
# v = (R + B) / 2 - G, a swap maps (u, v) to (-u, v), while red_green = u / 2 + v and
# yellow_blue = 3u / 4 - v / 2 mix the reversed u with the unchanged v.
STATISTICS = (
    "brightness",
    "contrast",
    "saturation",
    "colourfulness",
    "sharpness",
    "noise",
    "red_green",
    "yellow_blue",
    "red_green_contrast",
    "yellow_blue_contrast",
    "red_blue",
)


def input_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics of uint8 (N, H, W, 3) images, each a float64 array of N values."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    rgb = images.astype(np.float32) / 255.0
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    flat_luma = luma.reshape(len(images), -1)

    high = rgb.max(axis=-1)
    low = rgb.min(axis=-1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)

    # Hasler & Süsstrunk (2003), "Measuring colourfulness in natural images", from the
    # opponent axes' moments, which are statistics of their own as well.
    rg = (red - green).reshape(len(images), -1)
    yb = (0.5 * (red + green) - blue).reshape(len(images), -1)
    rg_mean, yb_mean, rg_std, yb_std = (
        rg.mean(axis=1),
        yb.mean(axis=1),
        rg.std(axis=1),
        yb.std(axis=1),
    )
    colourfulness = np.sqrt(rg_std**2 + yb_std**2) + 0.3 * np.sqrt(rg_mean**2 + yb_mean**2)

    # Variance of the 4-neighbour Laplacian: falls when an image is blurred.
    laplacian = (
        luma[:, :-2, 1:-1]
        + luma[:, 2:, 1:-1]
        + luma[:, 1:-1, :-2]
        + luma[:, 1:-1, 2:]
        - 4.0 * luma[:, 1:-1, 1:-1]
    )
    # Immerkær (1996), "Fast noise variance estimation": the mask below cancels image
    # structure up to second order, leaving mostly noise.
    mask_response = (
        luma[:, :-2, :-2]
        + luma[:, :-2, 2:]
        + luma[:, 2:, :-2]
        + luma[:, 2:, 2:]
        - 2.0 * (luma[:, :-2, 1:-1] + luma[:, 2:, 1:-1] + luma[:, 1:-1, :-2] + luma[:, 1:-1, 2:])
        + 4.0 * luma[:, 1:-1, 1:-1]
    )
    inner = mask_response.shape[1] * mask_response.shape[2]
    noise = math.sqrt(math.pi / 2.0) * np.abs(mask_response).sum(axis=(1, 2)) / (6.0 * inner)

    values = {
        "brightness": flat_luma.mean(axis=1),
        "contrast": flat_luma.std(axis=1),
        "saturation": saturation.reshape(len(images), -1).mean(axis=1),
        "colourfulness": colourfulness,
        "sharpness": laplacian.reshape(len(images), -1).var(axis=1),
        "noise": noise,
        "red_green": rg_mean,
        "yellow_blue": yb_mean,
        "red_green_contrast": rg_std,
        "yellow_blue_contrast": yb_std,
        "red_blue": (red - blue).reshape(len(images), -1).mean(axis=1),
    }
    return {name: np.asarray(values[name], dtype=np.float64) for name in STATISTICS}


@torch.no_grad()
def embed(net: Any, config: model_module.ModelConfig, images: np.ndarray) -> np.ndarray:
    """The penultimate-layer embeddings (N, D) of uint8 (N, H, W, 3) images."""
    net.eval()
    parts = [
        net.embed(model_module.to_tensor(images[start : start + EMBED_BATCH], config)).float()
        for start in range(0, len(images), EMBED_BATCH)
    ]
    if not parts:
        raise ValueError("no images to embed")
    return torch.cat(parts).numpy()


@torch.no_grad()
def predict(net: Any, config: model_module.ModelConfig, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, C) exactly as the endpoint computes them (the net's own
    forward pass, test-time augmentation included)."""
    net.eval()
    parts = [
        torch.softmax(net(model_module.to_tensor(images[start : start + EMBED_BATCH], config)), 1)
        for start in range(0, len(images), EMBED_BATCH)
    ]
    if not parts:
        raise ValueError("no images to predict")
    return torch.cat(parts).float().numpy()


def _check_images(images: np.ndarray, sizes: list[int] | None, which: str) -> None:
    if len(images) < 2:
        raise ValueError(f"a baseline needs at least 2 {which} images, got {len(images)}")
    if sizes is not None and len(sizes) != len(images):
        raise ValueError(f"{len(sizes)} byte sizes for {len(images)} {which} images: one per image")


def build_baseline(
    net: Any,
    config: model_module.ModelConfig,
    images: np.ndarray,
    image_bytes_sizes: list[int] | None,
    input_images: np.ndarray | None = None,
    input_bytes_sizes: list[int] | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """The baseline document and the embeddings array, without writing anything.

    `images` (and their byte sizes) are held out from training: the model's answers and
    embeddings come from them. `input_images` (and theirs), every image of the training
    split, give the input statistics and upload sizes; None uses `images` for those too.
    """
    _check_images(images, image_bytes_sizes, "validation")
    if input_images is None:
        input_images, input_bytes_sizes = images, image_bytes_sizes
    else:
        _check_images(input_images, input_bytes_sizes, "input-profile")
    embeddings, probabilities = embed(net, config, images), predict(net, config, images)
    classes = list(config.classes)
    predicted = probabilities.argmax(axis=1)
    document: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "count": len(images),
        "input_count": len(input_images),
        "classes": classes,
        "confidence_threshold": CONFIDENCE_THRESHOLD,
        "input_statistics": {
            name: [round(float(v), 6) for v in values]
            for name, values in input_statistics(input_images).items()
        },
        "upload_bytes": None if input_bytes_sizes is None else [int(s) for s in input_bytes_sizes],
        "content_types": None
        if input_bytes_sizes is None
        else {STAGED_CONTENT_TYPE: len(input_bytes_sizes)},
        "class_counts": {name: int((predicted == i).sum()) for i, name in enumerate(classes)},
        "probabilities": [[round(float(p), 6) for p in row] for row in probabilities],
        "confidences": [round(float(c), 6) for c in probabilities.max(axis=1)],
        "embeddings_file": EMBEDDINGS_FILE,
        "embedding_dim": int(embeddings.shape[1]),
    }
    return document, embeddings.astype(np.float32)


def write_baseline(
    model_dir: Path,
    model: torch.nn.Module,
    config: model_module.ModelConfig,
    images: np.ndarray,
    image_bytes_sizes: list[int] | None,
    input_images: np.ndarray | None = None,
    input_bytes_sizes: list[int] | None = None,
) -> None:
    """Write baseline.json and baseline_embeddings.npy into the model directory.

    `images` is the validation split as uint8 (N, 32, 32, 3); `image_bytes_sizes` the
    byte sizes of the staged files those images came from (None when unknown: the
    monitor then skips the size and format tests). `input_images` and
    `input_bytes_sizes`, the whole training split (train + validation), are the
    reference of the input statistics and upload sizes (see the module docstring);
    None uses the validation images for them too.
    """
    document, embeddings = build_baseline(
        model, config, images, image_bytes_sizes, input_images, input_bytes_sizes
    )
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    # Write to temporary names first, so a crash never leaves half a baseline behind.
    embeddings_tmp = model_dir / (EMBEDDINGS_FILE + ".tmp")
    with embeddings_tmp.open("wb") as handle:
        np.save(handle, embeddings)
    document_tmp = model_dir / (BASELINE_FILE + ".tmp")
    document_tmp.write_text(json.dumps(document) + "\n")
    embeddings_tmp.replace(model_dir / EMBEDDINGS_FILE)
    document_tmp.replace(model_dir / BASELINE_FILE)
