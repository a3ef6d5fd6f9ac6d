"""The classifier, and how it is saved to and loaded from a SageMaker model directory.

Runs inside SageMaker's containers (train.py and inference.py import it as a sibling
module) and here. The model directory holds:
  model.pth   the state dict (the frozen whitening filters included)
  model.json  what rebuilds the network and feeds it: architecture, widths, class names,
              input normalisation, test-time augmentation, calibration temperature

The network follows Keller Jordan's airbench (CIFAR-10 speedruns): a frozen first layer
that whitens 2×2 patches (its filters are the training patches' eigenvectors, so the
net starts from decorrelated inputs and learns faster from few images), then three
conv-pool-BatchNorm-GELU groups, a max pool and a scaled linear head. With 1,000
training images one such net's accuracy swings by a few points with its initialisation,
so the model is a small ensemble of them whose logits are averaged. In eval mode the
net also averages over the image and its mirror image, so every caller (training's
evaluation, the endpoint) gets the same test-time augmentation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

WEIGHTS_FILE = "model.pth"
CONFIG_FILE = "model.json"
WHITEN_KERNEL = 2
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL**2  # each patch eigenvector and its negation
LOGIT_SCALE = 1 / 9  # airbench's output scaling, which suits label smoothing
GROUPED_MAX_VIEWS = 8  # ServingNet's largest pass (images x views) in grouped convolutions
# The folded sequence's first layers (`_folded`) up to the first conv group's output: the
# whitening conv, GELU, then the group's conv1, max pool, GELU, conv2, GELU.
FIRST_GROUP_END = 7
ModuleT = TypeVar("ModuleT", bound=nn.Module)


class Conv(nn.Conv2d):
    """3×3 'same' conv whose first filters start as identities (airbench's dirac init)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        weight = self.weight.data
        torch.nn.init.dirac_(weight[: weight.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = Conv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(out_channels, momentum=0.4, eps=1e-12)
        self.conv2 = Conv(out_channels, out_channels)
        self.norm2 = nn.BatchNorm2d(out_channels, momentum=0.4, eps=1e-12)
        self.activation = nn.GELU()
        # BatchNorm scales stay at 1: only their biases learn, as in airbench.
        self.norm1.weight.requires_grad_(False)
        self.norm2.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


class Member(nn.Module):
    """One network: whitening conv, three conv groups, max pool, scaled linear head."""

    def __init__(self, num_classes: int, widths: tuple[int, int, int]) -> None:
        super().__init__()
        self.whiten = nn.Conv2d(3, WHITEN_WIDTH, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            nn.GELU(),
            ConvGroup(WHITEN_WIDTH, w1),
            ConvGroup(w1, w2),
            ConvGroup(w2, w3),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(w3, num_classes, bias=False)

    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the frozen first layer from the (normalised) training images' 2×2 patches."""
        channels = images.shape[1]
        patches = (
            images.unfold(2, WHITEN_KERNEL, 1)
            .unfold(3, WHITEN_KERNEL, 1)
            .transpose(1, 3)
            .reshape(-1, channels, WHITEN_KERNEL, WHITEN_KERNEL)
            .double()
        )
        flat = patches.reshape(len(patches), -1)
        covariance = flat.T @ flat / len(flat)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        eigenvalues = eigenvalues.flip(0).view(-1, 1, 1, 1)
        filters = eigenvectors.T.reshape(-1, channels, WHITEN_KERNEL, WHITEN_KERNEL).flip(0)
        scaled = filters / torch.sqrt(eigenvalues.clamp_min(0) + eps)
        self.whiten.weight.data[:] = torch.cat((scaled, -scaled)).to(self.whiten.weight.dtype)
        assert self.whiten.bias is not None
        self.whiten.bias.data.zero_()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.whiten(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x)) * LOGIT_SCALE


class Net(nn.Module):
    """An ensemble of independently initialised members whose logits are averaged.

    Training optimises each member's own loss (`member_logits`), so they stay as diverse
    as separately trained nets. In eval mode the prediction also averages over the image
    and its mirror image (flip test-time augmentation) and divides the logits by a
    temperature that training fits on the validation split, so that the probabilities the
    endpoint returns (which the workflow's 0.93 confidence filter reads) are calibrated:
    label smoothing alone would cap them near 0.9.
    """

    def __init__(
        self,
        num_classes: int,
        widths: tuple[int, int, int],
        members: int = 1,
        tta_flip: bool = True,
        temperature: float = 1.0,
        tta_translate: bool = False,
    ) -> None:
        super().__init__()
        self.tta_flip = tta_flip
        self.tta_translate = tta_translate
        self.temperature = temperature
        self.members = nn.ModuleList(Member(num_classes, widths) for _ in range(members))

    def init_whitening(self, images: torch.Tensor) -> None:
        for member in self.members:
            member.init_whitening(images)  # type: ignore[operator]

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(members, N, classes): each member's logits, for training each on its own loss."""
        return torch.stack([member(x) for member in self.members])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate-layer embedding (what drift monitoring compares): the members'
        embeddings side by side."""
        return torch.cat([member.embed(x) for member in self.members], dim=1)  # type: ignore[operator]

    def first_group_means(self, x: torch.Tensor) -> torch.Tensor:
        """(N, members x first width): each member's first conv group's per-channel mean
        activation, the members side by side (what the familiarity check reads)."""
        return torch.cat(
            [member.features[:2](member.whiten(x)).mean((2, 3)) for member in self.members],  # type: ignore[index,operator]
            dim=1,
        )

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval-mode logits and `first_group_means` of the images: two passes over
        the first group here (`ServingNet` taps its one pass)."""
        return self(x), self.first_group_means(x)

    def views_logits(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tta_flip:
            return self.member_logits(x).mean(0)
        # The image and its mirror in one batch: in eval mode every image is computed on
        # its own, and one pass over twice the images costs less than two passes
        # (docs/benchmarks.md, "Endpoint throughput").
        both = self.member_logits(torch.cat((x, x.flip(-1)))).mean(0)
        return (both[: len(x)] + both[len(x) :]) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.member_logits(x).mean(0)
        return augmented_logits(self.views_logits, x, self.tta_translate, self.temperature)


def augmented_logits(
    views_logits: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tta_translate: bool,
    temperature: float,
    unshifted: torch.Tensor | None = None,
) -> torch.Tensor:
    """The eval-mode logits of `Net` and `ServingNet`: `views_logits` (the image with its
    mirror) and, with translate TTA, its shifted copies, divided by the temperature.
    `unshifted`: `views_logits(x)`, when the caller has computed it already."""
    logits = views_logits(x) if unshifted is None else unshifted
    if tta_translate:
        # airbench's translation TTA: the image (with its mirror) weighs half, and the
        # image shifted one pixel up-left and one down-right (reflect padding) a quarter each.
        padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = views_logits(padded[..., :-2, :-2]) + views_logits(padded[..., 2:, 2:])
        logits = (logits + shifted / 2) / 2
    return logits / temperature


class ServingNet(nn.Module):
    """A `Net`'s eval-mode answers computed with less CPU: what the endpoint serves.

    Each member's eval-mode BatchNorms (a per-channel scale and shift) are folded into the
    conv before them, and the heads become one linear layer that averages the members'
    logits. Small passes run the members as one network of their channels side by side
    (`grouped`: the whitening convs one conv, each 3×3 conv one conv grouped by member, so
    no member sees another's channels): the same arithmetic in about a quarter of the
    operations, which saves most where each operation's fixed cost counts. oneDNN's
    grouped convolutions cost more than the members' own from ~16 views (one thread), so
    larger passes run the folded members apart (docs/benchmarks-history.md, "Issue 22").
    The image and its mirror still go through as one batch. The answers are the Net's up to float
    rounding (~1e-6); what is saved in model.pth does not change. Eval only: build it from
    a trained net, after its last weight update. `forward_with_features` also gives the
    familiarity check's features (`Net.first_group_means`) from the same pass: the first
    group's output is a layer of the folded sequence, so no second pass is made.
    """

    def __init__(self, net: Net) -> None:
        super().__init__()
        self.tta_flip = net.tta_flip
        self.tta_translate = net.tta_translate
        self.temperature = net.temperature
        members = [member for member in net.members if isinstance(member, Member)]
        with torch.no_grad():  # the weights are copied and folded, not learned
            folded = [_folded(member) for member in members]
            self.members = nn.ModuleList(folded)
            self.grouped = _grouped(folded)
            heads = torch.cat([member.head.weight for member in members], dim=1)
            self.head = nn.Linear(heads.shape[1], heads.shape[0], bias=False)
            self.head.weight.copy_(heads * (LOGIT_SCALE / len(members)))

    def views_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._views_logits_and_features(x)[0]

    def _views_logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits of the images with their mirrors, and the images' own (unmirrored)
        `Net.first_group_means`, tapped from the same pass."""
        if not self.tta_flip:
            embedded, means = self.embed_and_first_group_means(x)
            return self.head(embedded), means
        both, means = self.embed_and_first_group_means(torch.cat((x, x.flip(-1))))
        # The head is linear: the mean of the views' logits is the head of their mean.
        return self.head((both[: len(x)] + both[len(x) :]) / 2), means[: len(x)]

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        """The members' embeddings side by side, as `Net.embed` gives them."""
        return self.embed_and_first_group_means(views)[0]

    def embed_and_first_group_means(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`embed` and `Net.first_group_means` of the views, in one pass: the first group's
        output is where the folded sequence reaches FIRST_GROUP_END. In the grouped network
        the members' channels sit side by side in member order, as there."""
        if len(views) <= GROUPED_MAX_VIEWS:
            return _tapped(self.grouped, views)
        embedded, means = zip(*(_tapped(member, views) for member in self.members), strict=True)
        return torch.cat(embedded, dim=1), torch.cat(means, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and `Net.first_group_means` of the images (not of their mirrors or
        shifts), from the one pass the logits take."""
        logits, means = self._views_logits_and_features(x)
        augmented = augmented_logits(
            self.views_logits, x, self.tta_translate, self.temperature, unshifted=logits
        )
        return augmented, means


def _tapped(network: nn.Module, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A folded sequence's output, and its first conv group's per-channel means."""
    assert isinstance(network, nn.Sequential)
    first_group = network[:FIRST_GROUP_END](views)
    return network[FIRST_GROUP_END:](first_group), first_group.mean((2, 3))


def _folded(member: Member) -> nn.Sequential:
    """A member's embedding network with each BatchNorm folded into the conv before it:
    norm(conv(x)) = scale * conv(x) + (bias - mean * scale), per channel. The max pool
    between conv1 and norm1 commutes with the scale where it is positive
    (`can_fold_norms`)."""
    layers: list[nn.Module] = [_copy_conv(member.whiten.weight, _bias(member.whiten)), nn.GELU()]
    for group in member.features:
        if not isinstance(group, ConvGroup):
            continue
        layers += [_folded_conv(group.conv1, group.norm1), nn.MaxPool2d(2), nn.GELU()]
        layers += [_folded_conv(group.conv2, group.norm2), nn.GELU()]
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())


def _grouped(members: list[nn.Sequential]) -> nn.Sequential:
    """The folded members as one network: their convs' channels side by side, each 3×3
    conv grouped by member (the first conv, the whitening, reads the image all share)."""
    count = len(members)
    layers: list[nn.Module] = []
    for index, layer in enumerate(members[0]):
        if not isinstance(layer, nn.Conv2d):
            layers.append(layer)
            continue
        convs = [conv for member in members if isinstance(conv := member[index], nn.Conv2d)]
        weight = torch.cat([conv.weight for conv in convs])
        bias = torch.cat([_bias(conv) for conv in convs])
        layers.append(_copy_conv(weight, bias, groups=1 if index == 0 else count))
    return nn.Sequential(*layers)


def _folded_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    assert norm.running_mean is not None
    scale = _norm_scale(norm)
    return _copy_conv(conv.weight * scale.view(-1, 1, 1, 1), norm.bias - norm.running_mean * scale)


def _copy_conv(weight: torch.Tensor, bias: torch.Tensor, groups: int = 1) -> nn.Conv2d:
    """A conv with these weights, 'same' padding for odd kernels (none for the whitening's 2×2)."""
    out_channels, in_channels, kernel, _ = weight.shape
    conv = nn.Conv2d(
        in_channels * groups,
        out_channels,
        kernel,
        padding=kernel // 2 if kernel % 2 else 0,
        groups=groups,
    )
    conv.weight.copy_(weight)
    _bias(conv).copy_(bias)
    return conv


def _bias(layer: nn.Conv2d) -> torch.Tensor:
    assert layer.bias is not None
    return layer.bias


def _norm_scale(norm: nn.Module) -> torch.Tensor:
    """An eval-mode BatchNorm's per-channel scale."""
    assert isinstance(norm, nn.BatchNorm2d) and norm.running_var is not None
    return norm.weight / torch.sqrt(norm.running_var + norm.eps)


def can_fold_norms(net: Net) -> bool:
    """Whether every BatchNorm after a max pool scales by a positive factor, so that
    folding it into the conv before the pool keeps the answers: max(s * a, s * b) is
    s * max(a, b) only for s > 0. Training keeps these scales at 1 (their weights are
    frozen); a net where one is not is served as it is."""
    with torch.no_grad():
        return all(
            bool((_norm_scale(group.norm1) > 0).all())
            for member in net.members
            for group in member.modules()
            if isinstance(group, ConvGroup)
        )


@dataclass
class ModelConfig:
    """What rebuilds the network and feeds it; saved as model.json beside the weights."""

    classes: list[str]
    mean: list[float]  # per-channel input normalisation, from the training images
    std: list[float]
    architecture: str = "airbench"
    widths: list[int] = field(default_factory=lambda: [32, 128, 128])
    members: int = 3
    tta_flip: bool = True
    tta_translate: bool = False
    temperature: float = 1.0  # fit on the validation split by train.py

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ModelConfig:
        if document.get("architecture") != "airbench":
            raise ValueError(f"unknown architecture {document.get('architecture')!r}")
        return cls(
            classes=[str(name) for name in document["classes"]],
            mean=[float(value) for value in document["mean"]],
            std=[float(value) for value in document["std"]],
            widths=[int(width) for width in document["widths"]],
            # Model dirs written before an option existed lack its key: they had one
            # member, flip TTA, no shifts, temperature 1.
            members=int(document.get("members", 1)),
            tta_flip=bool(document.get("tta_flip", True)),
            tta_translate=bool(document.get("tta_translate", False)),
            temperature=float(document.get("temperature", 1.0)),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_model(config: ModelConfig) -> Net:
    return Net(
        num_classes=len(config.classes),
        widths=(config.widths[0], config.widths[1], config.widths[2]),
        members=config.members,
        tta_flip=config.tta_flip,
        temperature=config.temperature,
        tta_translate=config.tta_translate,
    )


def to_tensor(images: np.ndarray, config: ModelConfig) -> torch.Tensor:
    """uint8 (N, H, W, 3) arrays to the normalised float (N, 3, H, W) batch the model takes."""
    batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (batch - mean) / std


def predict(net: nn.Module, batch: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Class probabilities, in eval mode (so with the net's test-time augmentation),
    `batch_size` images at a time."""
    net.eval()
    with torch.no_grad():
        parts = [
            net(batch[start : start + batch_size]).softmax(1)
            for start in range(0, len(batch), batch_size)
        ]
    return torch.cat(parts).float().cpu()


def save_model(model: nn.Module, config: ModelConfig, model_dir: Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_dir / WEIGHTS_FILE)
    (model_dir / CONFIG_FILE).write_text(json.dumps(config.to_json(), indent=2) + "\n")


def load_model(model_dir: Path) -> tuple[Net, ModelConfig]:
    """Rebuild the network from a model directory, in eval mode on the CPU."""
    config = ModelConfig.from_json(json.loads((model_dir / CONFIG_FILE).read_text()))
    model = build_model(config)
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return to_fast_layout(model), config


def to_fast_layout(model: ModuleT) -> ModuleT:
    """The network with its weights in channels-last layout, in which oneDNN's CPU
    convolutions run this net 1.5-2.4x faster than in the default layout (batches of 1 to
    32, one thread; docs/benchmarks.md, "Endpoint throughput"). The answers are the same
    up to float rounding (~1e-8)."""
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # a documented keyword its stubs lack


def for_serving(net: Net) -> Net | ServingNet:
    """The network the endpoint runs: `ServingNet` (the same answers, less CPU per
    image), or the net itself where its BatchNorms cannot be folded (`can_fold_norms`)."""
    if not can_fold_norms(net):
        return net
    served = ServingNet(net.eval()).requires_grad_(False).eval()
    return to_fast_layout(served)
