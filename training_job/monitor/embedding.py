"""Embeddings of captured images for the MMD test, at a cost a 100,000-record report affords.

The model is an ensemble whose `embed` puts its members' penultimate layers side by side
(training_job/code/model.py), and the baseline stores that concatenation. Each member is a
complete classifier trained on the same images, so one member's embedding already shows
what the model "sees"; the others mostly repeat it, at the same CPU cost each, and the
model pass is most of a report's time. By default the monitor therefore embeds with the
first member only and compares against the matching first columns of the baseline (the
same numbers the full pass would give there). `members` picks how many members to use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from training_job import model_code

# Images per forward pass. With one torch thread (see `threads` in cli.py) the CPU per
# image barely depends on the batch size; 256 keeps the activations near 30 MB.
EMBED_BATCH = 256


class Embedder:
    """uint8 (N, H, W, 3) images to float32 (N, D) embeddings of the first `members`
    ensemble members (every member when `members` is None or the net is no ensemble)."""

    def __init__(self, net: Any, config: Any, members: int | None = 1) -> None:
        if members is not None and members < 1:
            raise ValueError(f"members must be at least 1, got {members}")
        self.net = net.eval()
        self.config = config
        self.model = model_code.model()
        ensemble = getattr(net, "members", None)
        self.parts: list[Any] | None = None
        if members is not None and ensemble is not None and members < len(ensemble):
            self.parts = list(ensemble)[:members]
        probe = np.zeros((1, 32, 32, 3), dtype=np.uint8)
        with torch.inference_mode():
            self.full_dimensions = int(self.net.embed(self._tensor(probe)).shape[1])
        self.dimensions = int(self(probe).shape[1])

    def _tensor(self, images: np.ndarray) -> torch.Tensor:
        return self.model.to_tensor(images, self.config)

    def _embed(self, batch: torch.Tensor) -> torch.Tensor:
        if self.parts is None:
            return self.net.embed(batch)
        return torch.cat([part.embed(batch) for part in self.parts], dim=1)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, getattr(self, "dimensions", 0)), dtype=np.float32)
        with torch.inference_mode():
            parts = [
                self._embed(self._tensor(images[start : start + EMBED_BATCH])).float()
                for start in range(0, len(images), EMBED_BATCH)
            ]
        return torch.cat(parts).numpy()
