"""A baseline.json written by the real writer (baseline_profile.write_baseline) for tests
that need one whose contents they know: 40 validation images, half bicycles and half
motorcycles, every answer confident (0.953 to 0.995, never below the 0.93 threshold)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch

from training_job import model_code

CLASSES = ["bicycle", "motorcycle"]


class KnownAnswers(torch.nn.Module):
    """A net whose answers the tests fix, so the baseline the writer derives from it is
    known: a bright image is a bicycle, a dark one a motorcycle, each with confidence
    0.953 to 0.995 by its exact brightness (never below the 0.93 threshold)."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        level = batch.mean(dim=(1, 2, 3)) * 255  # to_tensor with mean 0, std 1: pixel / 255
        side = torch.where(level > 100, 1.0, -1.0)
        margin = 1.5 + 0.04 * torch.remainder(level.round(), 20)  # softmax: 0.953 .. 0.995
        return torch.stack([side * margin, -side * margin], dim=1)

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.mean(dim=(2, 3))


@functools.cache
def known_baseline() -> bytes:
    """The writer's baseline.json for KnownAnswers on 20 bright and 20 dark images."""
    profile, model = model_code.profile(), model_code.model()
    config = model.ModelConfig(CLASSES, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    levels = [130 + i for i in range(20)] + [10 + i for i in range(20)]
    images = np.stack([np.full((32, 32, 3), level, dtype=np.uint8) for level in levels])
    with tempfile.TemporaryDirectory() as directory:
        profile.write_baseline(Path(directory), KnownAnswers(), config, images, None)
        return (Path(directory) / profile.BASELINE_FILE).read_bytes()
