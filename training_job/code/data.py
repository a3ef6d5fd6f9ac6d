"""The training data: the channels SageMaker mounts, read through their `.lst` manifests,
the seeded validation split, and the augmentation applied to each training batch.

A split is a pair of channels: `SM_CHANNEL_<SPLIT>` holds the PNGs and
`SM_CHANNEL_<SPLIT>_LST` the `<split>.lst` naming them (contract.manifest reads it).
The optional `reviewed` pair holds photos people labelled in the review queue (`train
--include-reviewed`): they join the training part only (read_reviewed says why).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import imaging
import numpy as np
import torch
from torch import nn

from contract.decisions import REVIEWED_MANIFEST_VARIABLE, REVIEWED_SHA256_VARIABLE
from contract.manifest import ManifestError, read_lst


class TrainingError(Exception):
    """A problem with the inputs or hyperparameters, reported as one clear line."""


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, 32, 32, 3)
    labels: np.ndarray  # int64 (N,)
    byte_sizes: list[int]


def find_lst(directory: Path | None, name: str, channel: str) -> Path:
    if directory is None:
        raise TrainingError(f"the {channel} channel is missing (set SM_CHANNEL_{channel.upper()})")
    if not directory.is_dir():
        raise TrainingError(f"the {channel} channel {directory} is not a directory")
    if (directory / name).is_file():
        return directory / name
    candidates = sorted(directory.glob("*.lst"))
    if len(candidates) != 1:
        raise TrainingError(f"the {channel} channel {directory} holds no single {name}")
    return candidates[0]


def read_split(
    images_dir: Path | None, lst_dir: Path | None, split: str, classes: list[str]
) -> Split:
    """Read `<split>.lst` (`row<TAB>label<TAB>filename`) and decode the images it names."""
    lst_path = find_lst(lst_dir, f"{split}.lst", f"{split}_lst")
    if images_dir is None:
        raise TrainingError(f"the {split} channel is missing (set SM_CHANNEL_{split.upper()})")
    if not images_dir.is_dir():
        raise TrainingError(f"the {split} channel {images_dir} is not a directory")
    root = images_dir.resolve()
    images: list[np.ndarray] = []
    labels: list[int] = []
    sizes: list[int] = []
    try:
        entries = read_lst(lst_path)
    except ManifestError as error:
        raise TrainingError(f"{lst_path.name}: {error}") from error
    for number, entry in enumerate(entries, start=1):  # one entry a line: no blank lines
        where = f"{lst_path.name} line {number}"
        if not entry.label < len(classes):
            raise TrainingError(
                f"{where}: label {entry.label} is outside the {len(classes)} classes "
                f"{','.join(classes)} (does --classes match the data?)"
            )
        path = root / entry.filename  # a plain name (contract.manifest), inside the channel
        try:
            data = path.read_bytes()
        except OSError as error:
            raise TrainingError(f"{where}: cannot read {entry.filename!r}: {error}") from error
        try:
            images.append(imaging.decode(data))
        except imaging.ImageDecodeError as error:
            raise TrainingError(f"{where}: {entry.filename!r}: {error}") from error
        labels.append(entry.label)
        sizes.append(len(data))
    if not images:
        raise TrainingError(f"{lst_path} lists no images")
    return Split(np.stack(images), np.array(labels, dtype=np.int64), sizes)


@dataclass
class Reviewed:
    split: Split
    record: dict[str, object]  # metrics.json's "reviewed": what was added, from where


def read_reviewed(
    images_dir: Path | None,
    lst_dir: Path | None,
    classes: list[str],
    test: Split,
    environ: Mapping[str, str],
) -> Reviewed | None:
    """The `reviewed` channels, or None when the job has neither.

    The photos are added to the training part only, never to validation: validation fits
    the softmax temperature and profiles the drift baseline's answers, and reviewed photos
    are mostly the doubtful ones the gate stopped, so in validation they would calibrate
    the model for hard cases instead of the traffic, and make validation metrics of two
    runs incomparable. A photo whose pixels equal a test image's is refused: training on
    the test split would make its accuracy a lie (a re-upload of a test image is exactly
    that; a re-encoded JPEG of one is not caught)."""
    if images_dir is None and lst_dir is None:
        return None
    reviewed = read_split(images_dir, lst_dir, "reviewed", classes)
    sha256 = hashlib.sha256(find_lst(lst_dir, "reviewed.lst", "reviewed_lst").read_bytes())
    expected = environ.get(REVIEWED_SHA256_VARIABLE)
    if expected and expected != sha256.hexdigest():
        raise TrainingError(
            f"the reviewed manifest in the channel has SHA-256 {sha256.hexdigest()}, "
            f"not the {expected} the launcher checked"
        )
    test_pixels = {image.tobytes() for image in test.images}
    leaked = [n for n, image in enumerate(reviewed.images, 1) if image.tobytes() in test_pixels]
    if leaked:
        raise TrainingError(
            f"reviewed.lst lines {', '.join(map(str, leaked[:10]))}"
            f"{' ...' if len(leaked) > 10 else ''}: {len(leaked)} reviewed photo(s) have the "
            "pixels of a test image; the test split is never trained on"
        )
    counts = np.bincount(reviewed.labels, minlength=len(classes))
    record: dict[str, object] = {
        "added": len(reviewed.labels),
        "per_class": {name: int(count) for name, count in zip(classes, counts, strict=True)},
        "manifest": environ.get(REVIEWED_MANIFEST_VARIABLE) or "unknown",
        "sha256": sha256.hexdigest(),
    }
    return Reviewed(reviewed, record)


def concatenate(first: Split, second: Split) -> Split:
    return Split(
        np.concatenate([first.images, second.images]),
        np.concatenate([first.labels, second.labels]),
        first.byte_sizes + second.byte_sizes,
    )


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): `val_fraction` of each class, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = round(len(members) * val_fraction)
        if count == 0 or count == len(members):
            raise TrainingError(
                f"class {label} has {len(members)} training images: too few to hold out "
                f"{val_fraction:.0%} for validation"
            )
        val_parts.append(members[:count])
        train_parts.append(members[count:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def subset(split: Split, indices: np.ndarray) -> Split:
    return Split(
        split.images[indices], split.labels[indices], [split.byte_sizes[i] for i in indices]
    )


def augment(
    images: torch.Tensor, translate: int, flip: bool, cutout: int, generator: torch.Generator
) -> torch.Tensor:
    """Random translation (reflect padding), horizontal flip and cutout, per image."""
    count, _, height, width = images.shape
    if translate:
        padded = nn.functional.pad(images, (translate,) * 4, mode="reflect")
        span = 2 * translate + 1
        shifts = torch.randint(0, span, (count, 2), generator=generator)
        out = torch.empty_like(images)
        for dy in range(span):
            for dx in range(span):
                chosen = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().flatten()
                if len(chosen):
                    out[chosen] = padded[chosen, :, dy : dy + height, dx : dx + width]
        images = out
    if flip:
        mirrored = torch.rand(count, generator=generator) < 0.5
        images = torch.where(mirrored.view(-1, 1, 1, 1), images.flip(-1), images)
    if cutout:
        # Erased to zero, which after normalisation is the training images' mean colour.
        corners = torch.randint(0, max(1, height - cutout + 1), (count, 2), generator=generator)
        rows = torch.arange(height).view(1, -1, 1)
        columns = torch.arange(width).view(1, 1, -1)
        top, left = corners[:, 0].view(-1, 1, 1), corners[:, 1].view(-1, 1, 1)
        erased = (
            (rows >= top) & (rows < top + cutout) & (columns >= left) & (columns < left + cutout)
        )
        images = images.masked_fill(erased.unsqueeze(1), 0.0)
    return images
