"""Familiarity: whether a photo looks like the photos the model was trained on.

A two-class softmax is confident about things it has never seen (a parcel, a night sky),
so the confidence gate alone routes them. This module scores each photo by the model's
own features: the per-channel means of each ensemble member's first conv group (what the
net sees of colours, edges and textures, before the layers that only tell bicycles from
motorcycles), side by side, and the Mahalanobis distance of that vector to the nearest
class mean, with one covariance shared by the classes (Lee et al., 2018, "A simple
unified framework for detecting out-of-distribution samples", which also finds the early
layers' statistics the best at telling far-away photos). Chosen on procedural photos only
(tests/non_vehicle_photos.py): the penultimate embedding, unit-length or not, a k-nearest
neighbour distance and the energy score told them from test photos with an AUROC of 0.45
to 0.64; the first group's means with 0.99 (docs/benchmarks.md, "Unfamiliar photos").

Fitted in two steps, on different photos (train.py calls `fit` after training):
  1. the class means and the shared covariance from the training photos (shrunk towards
     a multiple of the identity by Ledoit and Wolf's formula);
  2. the calibration from held-out photos of both classes (the validation split): their
     distances, sorted. A photo's familiarity is its conformal p-value, the share of
     held-out photos at least as far, (1 + #{held-out distance >= d}) / (n + 1). A photo
     counts as familiar when its familiarity is above 1 - FAMILIAR_SHARE: then an
     ordinary photo (exchangeable with the held-out ones) is counted unfamiliar with
     probability at most 1 - FAMILIAR_SHARE, whatever the distances' distribution.
     FAMILIAR_SHARE is 95 %, not 99 %: at 99 % the cut is the farthest of 100 held-out
     photos, one outlier's distance, and let through four times as many non-vehicle
     photos; the ordinary photos it stops are mostly doubtful ones the confidence gate
     stops anyway (0.5 points fewer test photos past the whole gate, measured).

Saved as FAMILIARITY_FILE beside model.pth. A model directory without it (a version
trained before) serves as before, and its answers say nothing of familiarity.

Only numpy, torch and the sibling modules: it ships in the serving container's code/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import model as model_module
import numpy as np
import torch

FAMILIARITY_FILE = "familiarity.npz"
FAMILIAR_SHARE = 0.95  # of ordinary photos that count as familiar
EMBED_BATCH = 256


@dataclass(frozen=True)
class Familiarity:
    means: np.ndarray  # (classes, D) float64, of the training photos' features
    precision: np.ndarray  # (D, D) float64: the inverse of the shrunk shared covariance
    calibration: np.ndarray  # (n,) float64, sorted: the held-out photos' distances
    familiar_share: float = FAMILIAR_SHARE

    @property
    def threshold(self) -> float:
        """The largest distance that still counts as familiar (inf when the held-out
        photos are too few to call any photo unfamiliar at this share)."""
        needed = math.floor((1 - self.familiar_share) * (len(self.calibration) + 1) + 1e-9)
        if needed < 1:
            return math.inf
        return float(self.calibration[len(self.calibration) - needed])

    def distances(self, net: model_module.Net, batch: torch.Tensor) -> np.ndarray:
        """(N,) the distance of each (normalised) image to the nearest class mean."""
        return self.distances_of(features(net, batch))

    def distances_of(self, featured: np.ndarray) -> np.ndarray:
        squared = []
        for mean in self.means:
            centred = featured - mean
            squared.append(np.einsum("nd,de,ne->n", centred, self.precision, centred))
        return np.sqrt(np.maximum(np.min(squared, axis=0), 0.0))

    def scores(self, distances: np.ndarray) -> np.ndarray:
        """(N,) familiarity in (0, 1]: the share of held-out photos at least as far."""
        at_least_as_far = len(self.calibration) - np.searchsorted(
            self.calibration, distances, side="left"
        )
        return (1 + at_least_as_far) / (len(self.calibration) + 1)

    def familiar(self, distances: np.ndarray) -> np.ndarray:
        return np.asarray(distances) <= self.threshold

    def save(self, model_dir: Path) -> None:
        np.savez(
            model_dir / FAMILIARITY_FILE,
            means=self.means,
            precision=self.precision,
            calibration=self.calibration,
            familiar_share=np.array(self.familiar_share),
        )


def features(net: model_module.Net, batch: torch.Tensor) -> np.ndarray:
    """(N, D) float64: each member's first conv group's per-channel mean activation, the
    members side by side (`Net.first_group_means`), in eval mode, EMBED_BATCH images at a
    time. The endpoint reads the same from its one pass (`ServingNet.forward_with_features`)."""
    net.eval()
    with torch.inference_mode():
        parts = [
            as_features(net.first_group_means(batch[start : start + EMBED_BATCH]))
            for start in range(0, len(batch), EMBED_BATCH)
        ]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def as_features(first_group_means: torch.Tensor) -> np.ndarray:
    """A network's first-group means as the float64 array the distances take."""
    return first_group_means.double().cpu().numpy()


def shrunk_covariance(centred: np.ndarray) -> np.ndarray:
    """Ledoit and Wolf's (2004) shrinkage of the sample covariance towards mu * I."""
    count, dimensions = centred.shape
    sample = centred.T @ centred / count
    mu = np.trace(sample) / dimensions
    target_distance = np.sum((sample - mu * np.eye(dimensions)) ** 2)
    # sum over rows x of ||x x^T - sample||_F^2, expanded so no D x D matrix per row is made
    squared_norms = np.einsum("nd,nd->n", centred, centred)
    spread = (
        np.sum(squared_norms**2)
        - 2 * np.einsum("nd,de,ne->", centred, sample, centred)
        + count * np.sum(sample**2)
    ) / count**2
    shrinkage = min(1.0, spread / target_distance) if target_distance > 0 else 1.0
    return (1 - shrinkage) * sample + shrinkage * mu * np.eye(dimensions)


def fit(
    net: model_module.Net,
    config: model_module.ModelConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    held_out_images: np.ndarray,
    familiar_share: float = FAMILIAR_SHARE,
) -> Familiarity:
    """Class means and shared covariance from the training photos, the calibration from
    held-out photos (uint8 (N, 32, 32, 3) arrays, labels in class order)."""
    train = features(net, model_module.to_tensor(train_images, config))
    means = np.stack([train[train_labels == label].mean(0) for label in range(len(config.classes))])
    centred = train - means[train_labels]
    precision = np.linalg.inv(shrunk_covariance(centred))
    unfitted = Familiarity(means, precision, np.zeros(0), familiar_share)
    held_out = unfitted.distances(net, model_module.to_tensor(held_out_images, config))
    return Familiarity(means, precision, np.sort(held_out), familiar_share)


def gate_measures(
    familiarity: Familiarity,
    net: model_module.Net,
    batch: torch.Tensor,
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float,
) -> dict[str, float | int | None]:
    """The whole gate on labelled photos (metrics.json): the share familiar, and the share
    both confident (top probability >= `threshold`) and familiar, and how many of those
    are right."""
    familiar = familiarity.familiar(familiarity.distances(net, batch))
    distance_threshold = familiarity.threshold
    passed = (probabilities.max(1) >= threshold) & familiar
    right = probabilities.argmax(1) == labels
    count = int(passed.sum())
    return {
        "familiar_share": familiarity.familiar_share,
        "distance_threshold": (distance_threshold if math.isfinite(distance_threshold) else None),
        "calibration_photos": len(familiarity.calibration),
        "share_familiar": float(familiar.mean()),
        "share_passed": float(passed.mean()),
        "passed": count,
        "wrong_passed": int((passed & ~right).sum()),
        "accuracy_passed": float(right[passed].mean()) if count else 0.0,
    }


def load(model_dir: Path) -> Familiarity | None:
    """The model's familiarity statistics, or None for a version trained without them."""
    path = model_dir / FAMILIARITY_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as saved:
        return Familiarity(
            means=saved["means"],
            precision=saved["precision"],
            calibration=saved["calibration"],
            familiar_share=float(saved["familiar_share"]),
        )
