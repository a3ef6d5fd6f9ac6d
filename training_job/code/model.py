"""The classifier, and how it is saved to and loaded from a SageMaker model directory.

Runs inside SageMaker's containers (train.py and inference.py import it as a sibling
module) and here. The model directory holds:
  model.pth   the state dict
  model.json  what rebuilds the network and feeds it: architecture, widths, class names,
              input normalisation
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

WEIGHTS_FILE = "model.pth"
CONFIG_FILE = "model.json"


def conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Net(nn.Module):
    """A small residual network (ResNet-9 shape) for 32×32 RGB images."""

    def __init__(self, num_classes: int, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.features = nn.Sequential(
            conv_bn(3, w0),
            conv_bn(w0, w1),
            nn.MaxPool2d(2),
            Residual(w1),
            conv_bn(w1, w2),
            nn.MaxPool2d(2),
            conv_bn(w2, w3),
            nn.MaxPool2d(2),
            Residual(w3),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(w3, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate-layer embedding (what drift monitoring compares)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def build_model(config: dict[str, Any]) -> Net:
    return Net(num_classes=len(config["classes"]), widths=tuple(config["widths"]))


def default_config(classes: list[str], mean: list[float], std: list[float]) -> dict[str, Any]:
    return {
        "architecture": "resnet9",
        "widths": [32, 64, 128, 256],
        "classes": classes,
        "mean": mean,
        "std": std,
    }


def to_tensor(images: np.ndarray, config: dict[str, Any]) -> torch.Tensor:
    """uint8 (N, H, W, 3) arrays to the normalised float (N, 3, H, W) batch the model takes."""
    batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    return (batch - mean) / std


def save_model(model: nn.Module, config: dict[str, Any], model_dir: Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_dir / WEIGHTS_FILE)
    (model_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def load_model(model_dir: Path) -> tuple[Net, dict[str, Any]]:
    """Rebuild the network from a model directory, in eval mode on the CPU."""
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    model = build_model(config)
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model, config
