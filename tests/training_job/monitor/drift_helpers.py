"""Synthetic baselines and windows whose drift is known (test_detectors.py,
test_fast_path.py): normal input statistics, embeddings shifted on request, and class
probabilities of a chosen motorcycle share and sureness."""

from __future__ import annotations

from collections import Counter

import numpy as np

from training_job.monitor.baseline import Baseline
from training_job.monitor.detectors import Window


def _probabilities(
    rng: np.random.Generator, n: int, motorcycle_share: float, sureness: float = 8.0
) -> np.ndarray:
    motorcycle = rng.random(n) < motorcycle_share
    confidence = rng.beta(sureness, 1.0, n) * 0.5 + 0.5
    p_motorcycle = np.where(motorcycle, confidence, 1 - confidence)
    return np.column_stack([1 - p_motorcycle, p_motorcycle])


def sample(
    rng: np.random.Generator,
    n: int,
    brightness: float = 0.45,
    shift: float = 0.0,
    motorcycle_share: float = 0.5,
    sureness: float = 8.0,
    content_type: str = "image/png",
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    statistics = {
        "brightness": rng.normal(brightness, 0.1, n),
        "contrast": rng.gamma(4.0, 0.05, n),
        "noise": rng.lognormal(-4.0, 0.3, n),
    }
    embeddings = rng.normal(0.0, 1.0, (n, 8)) + shift
    sizes = rng.normal(2300, 200, n)
    return statistics, embeddings, sizes, _probabilities(rng, n, motorcycle_share, sureness)


def baseline(rng: np.random.Generator, n: int = 200) -> Baseline:
    statistics, embeddings, sizes, probabilities = sample(rng, n)
    return Baseline(
        ["bicycle", "motorcycle"],
        0.93,
        statistics,
        sizes,
        {"image/png": n},
        probabilities,
        embeddings,
        "synthetic",
    )


def window(rng: np.random.Generator, n: int = 200, **drift: float | str) -> Window:
    content_type = str(drift.pop("content_type", "image/png"))
    statistics, embeddings, sizes, probabilities = sample(rng, n, **drift)  # type: ignore[arg-type]
    return Window(statistics, sizes, Counter({content_type: n}), probabilities, embeddings)
