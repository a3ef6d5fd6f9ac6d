"""SageMaker script-mode training entry point for the bicycle/motorcycle classifier.

SageMaker's PyTorch container runs `python train.py --epochs 80 ...` with the
hyperparameters as arguments and the data as channels (`SM_CHANNEL_<NAME>` directories);
`python -m training_job train --mode local` runs this same file with the same
environment. It reads the PNGs listed in `train.lst`/`test.lst`, carves a stratified
validation split from train (the only data any choice is made on), trains, evaluates on
test once, and writes a self-contained model directory:

  SM_MODEL_DIR/model.pth, model.json       the network (model.save_model)
  SM_MODEL_DIR/metrics.json                 test/val metrics, hyperparameters, provenance
  SM_MODEL_DIR/plots/*.png                  confusion matrix, training curves
  SM_MODEL_DIR/code/*.py                    what SageMaker's serving container imports
  SM_OUTPUT_DATA_DIR/metrics.json           the metrics again, beside model.tar.gz

The recipe is Keller Jordan's airbench, scaled to 1,000 images: a frozen whitening first
layer, Nesterov SGD with label smoothing, a warm-up-then-decay learning rate, flip and
translate augmentation, flip test-time augmentation, plus what small data needs: strong
weight decay and a three-member ensemble (model.Net). The defaults were chosen on the
validation split only (docs/benchmarks.md, "Training accuracy"); every hyperparameter
is an argument below.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import baseline_profile
import imaging
import model as model_lib
import numpy as np
import torch
from torch import nn

from contract.manifest import ManifestError, read_lst

CODE_DIR = Path(__file__).resolve().parent
ECE_BINS = 15
# Modules the serving container needs next to inference.py (train.py itself does not).
SERVING_SUFFIXES = (".py", ".txt")
# Packages inference.py imports that live at the repository's root: SageMaker copies the
# estimator's `dependencies` beside this file (local_aws/training.py does the same).
SERVING_PACKAGES = ("contract",)


class TrainingError(Exception):
    """A problem with the inputs or hyperparameters, reported as one clear line."""


# --- arguments -------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def boolean(text: str) -> bool:
    # SageMaker serialises Python booleans as "True"/"False".
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"must be true or false, got {text}")


def class_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if len(names) < 2 or any(not name for name in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"must be two or more distinct, non-empty, comma-separated names, got {text!r}"
        )
    return names


def widths(text: str) -> list[int]:
    values = [positive_int(part) for part in text.split(",")]
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"must be three comma-separated widths, got {text}")
    return values


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train the bicycle/motorcycle classifier (SageMaker script mode). "
        "Hyperparameters are arguments (both --name-with-dashes and --name_with_underscores "
        "work, as SageMaker passes them); data and output locations default to the "
        "SM_* environment variables SageMaker sets.",
    )

    def add(name: str, **kwargs: Any) -> None:
        spellings = [f"--{name}"]
        if "-" in name:
            spellings.append(f"--{name.replace('-', '_')}")
        parser.add_argument(*spellings, **kwargs)

    add("epochs", type=positive_int, default=80, help="passes over the training split")
    add("batch-size", type=positive_int, default=100, help="images per SGD step")
    add("lr", type=non_negative_float, default=0.2, help="peak learning rate (Nesterov SGD)")
    add("momentum", type=non_negative_float, default=0.9, help="SGD momentum")
    add("weight-decay", type=non_negative_float, default=5e-3, help="L2 weight decay")
    add(
        "bias-lr-scale",
        type=non_negative_float,
        default=1.0,
        help="learning-rate multiplier for the BatchNorm biases (airbench uses 64)",
    )
    add(
        "warmup-fraction",
        type=fraction,
        default=0.2,
        help="share of the steps over which the learning rate rises linearly to --lr; "
        "it then falls linearly to zero",
    )
    add(
        "label-smoothing",
        type=non_negative_float,
        default=0.2,
        help="cross-entropy label smoothing, in [0, 1)",
    )
    add(
        "translate",
        type=int,
        default=2,
        help="random translation augmentation, in pixels (reflect padding); 0 turns it off",
    )
    add(
        "cutout",
        type=int,
        default=0,
        help="side of a random square erased from each training image, in pixels; 0 turns it off",
    )
    add(
        "mixup",
        type=non_negative_float,
        default=0.0,
        help="mixup: each batch is blended with a shuffled copy of itself, with a weight "
        "drawn from Beta(MIXUP, MIXUP), and learns both labels in that proportion; "
        "0 turns it off",
    )
    add("flip", type=boolean, default=True, help="random horizontal flip augmentation")
    add(
        "ema",
        type=non_negative_float,
        default=0.0,
        help="decay of the exponential moving average of the weights kept as the final "
        "model (0 keeps the last weights)",
    )
    add(
        "widths",
        type=widths,
        default=[32, 128, 128],
        help="channels of the three conv groups of each ensemble member, comma-separated",
    )
    add(
        "members",
        type=positive_int,
        default=3,
        help="independently initialised networks trained side by side and averaged",
    )
    add(
        "tta-flip",
        type=boolean,
        default=True,
        help="average predictions over each image and its mirror (test-time augmentation)",
    )
    add(
        "tta-translate",
        type=boolean,
        default=False,
        help="also average over the image shifted one pixel up-left and one down-right "
        "(with their mirrors when --tta-flip): 3x the inference cost",
    )
    add(
        "calibrate",
        type=boolean,
        default=True,
        help="fit the softmax temperature on the validation split (minimum log loss), so "
        "the served probabilities are calibrated; false keeps temperature 1",
    )
    add(
        "val-fraction",
        type=fraction,
        default=0.1,
        help="share of each class in train held out for validation (stratified, seeded)",
    )
    add("seed", type=int, default=0, help="seeds torch, numpy, random and the split")
    add(
        "classes",
        type=class_names,
        default=["bicycle", "motorcycle"],
        help="class names in label order, comma-separated",
    )
    add(
        "model-dir",
        type=Path,
        default=env("SM_MODEL_DIR"),
        help="where the model is written (default: $SM_MODEL_DIR)",
    )
    add(
        "output-data-dir",
        type=Path,
        default=env("SM_OUTPUT_DATA_DIR"),
        help="where extra outputs go (default: $SM_OUTPUT_DATA_DIR)",
    )
    add(
        "train",
        type=Path,
        default=env("SM_CHANNEL_TRAIN"),
        help="directory of training PNGs (default: $SM_CHANNEL_TRAIN)",
    )
    add(
        "train-lst",
        type=Path,
        default=env("SM_CHANNEL_TRAIN_LST"),
        help="directory holding train.lst (default: $SM_CHANNEL_TRAIN_LST)",
    )
    add(
        "test",
        type=Path,
        default=env("SM_CHANNEL_TEST"),
        help="directory of test PNGs (default: $SM_CHANNEL_TEST)",
    )
    add(
        "test-lst",
        type=Path,
        default=env("SM_CHANNEL_TEST_LST"),
        help="directory holding test.lst (default: $SM_CHANNEL_TEST_LST)",
    )
    return parser


@dataclass
class Hyperparameters:
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    bias_lr_scale: float
    warmup_fraction: float
    label_smoothing: float
    translate: int
    cutout: int
    mixup: float
    flip: bool
    ema: float
    widths: list[int]
    members: int
    tta_flip: bool
    tta_translate: bool
    calibrate: bool
    val_fraction: float
    seed: int
    classes: list[str] = field(default_factory=lambda: ["bicycle", "motorcycle"])

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Hyperparameters:
        names = cls.__dataclass_fields__
        hyperparameters = cls(**{name: getattr(args, name) for name in names})
        hyperparameters.check()
        return hyperparameters

    def check(self) -> None:
        if not 0 <= self.label_smoothing < 1:
            raise TrainingError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.ema < 1:
            raise TrainingError(f"--ema must be in [0, 1), got {self.ema}")
        if not 0 <= self.translate <= 8:
            raise TrainingError(f"--translate must be 0 to 8 pixels, got {self.translate}")
        if not 0 <= self.cutout <= 32:
            raise TrainingError(f"--cutout must be 0 to 32 pixels, got {self.cutout}")


# --- data ------------------------------------------------------------------------------


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


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[Any, Any]:
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


# --- training --------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # warn_only: a few CUDA kernels (max-pool backward) have no deterministic version.
    torch.use_deterministic_algorithms(True, warn_only=True)


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


@dataclass
class History:
    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def predict(net: nn.Module, batch: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Class probabilities, in eval mode (so with the net's test-time augmentation)."""
    net.eval()
    with torch.no_grad():
        parts = [net(batch[i : i + batch_size]).softmax(1) for i in range(0, len(batch), 500)]
    return torch.cat(parts).float().cpu()


def fit(
    hp: Hyperparameters,
    train: Split,
    val: Split,
    device: torch.device,
    report: Callable[[str], None] = print,
) -> tuple[model_lib.Net, dict[str, Any], History]:
    """Train on `train`, watching `val`; returns the final net, its config, the history."""
    seed_everything(hp.seed)
    generator = torch.Generator().manual_seed(hp.seed)
    mixup_rng = np.random.default_rng(hp.seed)
    pixels = train.images.reshape(-1, 3) / 255.0
    config = model_lib.default_config(hp.classes, pixels.mean(0).tolist(), pixels.std(0).tolist())
    config.update(
        widths=list(hp.widths),
        members=hp.members,
        tta_flip=hp.tta_flip,
        tta_translate=hp.tta_translate,
    )
    net = model_lib.build_model(config)
    train_x = model_lib.to_tensor(train.images, config)
    net.init_whitening(train_x)
    net = net.to(device, memory_format=torch.channels_last)
    train_y = torch.from_numpy(train.labels)
    val_x = model_lib.to_tensor(val.images, config).to(device, memory_format=torch.channels_last)
    val_y = torch.from_numpy(val.labels)
    averaged = copy.deepcopy(net) if hp.ema else None

    biases = [p for name, p in net.named_parameters() if "norm" in name and p.requires_grad]
    others = [p for name, p in net.named_parameters() if "norm" not in name and p.requires_grad]
    bias_lr = hp.lr * hp.bias_lr_scale
    optimizer = torch.optim.SGD(
        [
            # Decay scaled so every group shrinks by the same lr * weight_decay per step.
            {
                "params": biases,
                "lr": bias_lr,
                "weight_decay": hp.weight_decay * hp.lr / bias_lr if bias_lr else 0.0,
            },
            {"params": others, "lr": hp.lr, "weight_decay": hp.weight_decay},
        ],
        momentum=hp.momentum,
        nesterov=hp.momentum > 0,
    )
    steps_per_epoch = math.ceil(len(train_x) / hp.batch_size)
    total_steps = hp.epochs * steps_per_epoch
    warmup_steps = max(1, round(hp.warmup_fraction * total_steps))

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    history = History()
    for epoch in range(1, hp.epochs + 1):
        started = time.monotonic()
        net.train()
        order = torch.randperm(len(train_x), generator=generator)
        images = augment(train_x[order], hp.translate, hp.flip, hp.cutout, generator)
        labels = train_y[order]
        total_loss, correct = 0.0, 0
        for start in range(0, len(images), hp.batch_size):
            batch = images[start : start + hp.batch_size].to(
                device, memory_format=torch.channels_last
            )
            target = labels[start : start + hp.batch_size].to(device)
            weight, partner = 1.0, target
            if hp.mixup:
                weight = float(mixup_rng.beta(hp.mixup, hp.mixup))
                shuffled = torch.randperm(len(batch), generator=generator).to(device)
                batch = weight * batch + (1 - weight) * batch[shuffled]
                partner = target[shuffled]
            member_logits = net.member_logits(batch)
            # Each member learns from its own loss, as if trained alone; the sum keeps
            # every member's gradient the size it would have alone.
            loss = torch.stack(
                [
                    weight * loss_fn(logits, target) + (1 - weight) * loss_fn(logits, partner)
                    for logits in member_logits
                ]
            ).sum()
            logits = member_logits.mean(0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if averaged is not None:
                update_average(averaged, net, hp.ema)
            total_loss += float(loss.detach()) / hp.members * len(batch)
            correct += int((logits.argmax(1) == target).sum())
        final = averaged if averaged is not None else net
        val_probabilities = predict(final, val_x)
        history.epoch.append(epoch)
        history.loss.append(total_loss / len(images))
        history.train_accuracy.append(correct / len(images))
        history.val_accuracy.append(float((val_probabilities.argmax(1) == val_y).float().mean()))
        history.val_loss.append(
            float(nn.functional.nll_loss(val_probabilities.clamp_min(1e-12).log(), val_y))
        )
        history.seconds.append(time.monotonic() - started)
        report(
            f"epoch {epoch}/{hp.epochs} loss {history.loss[-1]:.4f} "
            f"train_acc {history.train_accuracy[-1]:.4f} val_acc {history.val_accuracy[-1]:.4f} "
            f"val_loss {history.val_loss[-1]:.4f} seconds {history.seconds[-1]:.1f}"
        )
    final = averaged if averaged is not None else net
    final = final.to("cpu", memory_format=torch.contiguous_format)
    final.eval()
    return final, config, history


def update_average(averaged: nn.Module, net: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for mean, current in zip(
            averaged.state_dict().values(), net.state_dict().values(), strict=True
        ):
            if mean.dtype.is_floating_point:
                mean.lerp_(current, 1 - decay)
            else:
                mean.copy_(current)


def fit_temperature(net: model_lib.Net, val_x: torch.Tensor, val_labels: np.ndarray) -> float:
    """The softmax temperature with the least log loss on the validation split."""
    net.temperature = 1.0
    net.eval()
    with torch.no_grad():
        logits = net(val_x).double()
    labels = torch.from_numpy(val_labels)
    candidates = np.geomspace(0.02, 5.0, 281)
    losses = [
        float(nn.functional.cross_entropy(logits / temperature, labels))
        for temperature in candidates
    ]
    return float(candidates[int(np.argmin(losses))])


# --- evaluation ------------------------------------------------------------------------


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    predicted = probabilities.argmax(1)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for index, name in enumerate(classes):
        true_positive = int(confusion[index, index])
        predicted_count = int(confusion[:, index].sum())
        actual_count = int(confusion[index].sum())
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / actual_count if actual_count else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": actual_count,
        }
    return {
        "accuracy": float((predicted == labels).mean()),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "expected_calibration_error": expected_calibration_error(probabilities, labels),
    }


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by count."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in itertools.pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def write_plots(
    plots_dir: Path, history: History, confusion: list[list[int]], classes: Sequence[str]
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display in a training container
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(4, 4))
    axis.imshow(confusion, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes)
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("test confusion matrix")
    for row, counts in enumerate(confusion):
        for column, count in enumerate(counts):
            axis.text(column, row, str(count), ha="center", va="center")
    figure.tight_layout()
    figure.savefig(plots_dir / "confusion_matrix.png", dpi=100)
    plt.close(figure)

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axis.plot(history.epoch, history.loss, label="train (smoothed labels)")
    loss_axis.plot(history.epoch, history.val_loss, label="validation")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_title("loss")
    loss_axis.legend()
    accuracy_axis.plot(history.epoch, history.train_accuracy, label="train (augmented)")
    accuracy_axis.plot(history.epoch, history.val_accuracy, label="validation")
    accuracy_axis.set_xlabel("epoch")
    accuracy_axis.set_title("accuracy")
    accuracy_axis.legend()
    figure.tight_layout()
    figure.savefig(plots_dir / "training_curves.png", dpi=100)
    plt.close(figure)


def copy_serving_code(code_dir: Path) -> list[str]:
    """Copy the modules SageMaker's serving container imports into `model_dir/code/`, so
    the archive serves with nothing but its code/ on the module path."""
    code_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in sorted(CODE_DIR.iterdir()):
        if source.suffix in SERVING_SUFFIXES and source.name != "train.py" and source.is_file():
            shutil.copy2(source, code_dir / source.name)
            copied.append(source.name)
    for package in SERVING_PACKAGES:
        shutil.copytree(
            serving_package_dir(package),
            code_dir / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            dirs_exist_ok=True,
        )
        copied.append(f"{package}/")
    return copied


def serving_package_dir(package: str) -> Path:
    """Where a dependency package is: beside this file in a training job, or at the
    repository's root when this file is run from the repository."""
    for candidate in (CODE_DIR / package, CODE_DIR.parents[1] / package):
        if (candidate / "__init__.py").is_file():
            return candidate
    raise TrainingError(
        f"package {package}/ is neither beside {CODE_DIR} nor at the repository root: "
        "pass it as a dependency of the training job"
    )


def write_monitoring_baseline(
    model_dir: Path, net: nn.Module, config: dict[str, Any], val: Split, train_all: Split
) -> bool:
    """Write the monitoring baseline beside the model: the model's answers from the
    validation split, the input statistics from the whole training split (they do not
    depend on the model; see baseline_profile.py)."""
    baseline_profile.write_baseline(
        model_dir, net, config, val.images, val.byte_sizes, train_all.images, train_all.byte_sizes
    )
    return True


# --- main ------------------------------------------------------------------------------


def choose_device() -> torch.device:
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        return torch.device("cuda")
    threads = int(os.environ.get("SM_NUM_CPUS") or 0) or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return torch.device("cpu")


def run(args: argparse.Namespace) -> dict[str, Any]:
    hp = Hyperparameters.from_args(args)
    if args.model_dir is None:
        raise TrainingError("no model directory: set SM_MODEL_DIR or pass --model-dir")
    train_all = read_split(args.train, args.train_lst, "train", hp.classes)
    test = read_split(args.test, args.test_lst, "test", hp.classes)
    counts = np.bincount(train_all.labels, minlength=len(hp.classes))
    for name, count in zip(hp.classes, counts, strict=True):
        if count == 0:
            raise TrainingError(
                f"class {name!r} has no training images (does --classes match the data?)"
            )
    train_indices, val_indices = stratified_split(train_all.labels, hp.val_fraction, hp.seed)
    train, val = subset(train_all, train_indices), subset(train_all, val_indices)
    device = choose_device()
    print(
        f"training on {len(train.labels)} images, validating on {len(val.labels)}, "
        f"testing on {len(test.labels)}; device {device}, threads {torch.get_num_threads()}",
        flush=True,
    )

    started = time.monotonic()
    net, config, history = fit(hp, train, val, device, lambda line: print(line, flush=True))
    val_x = model_lib.to_tensor(val.images, config)
    if hp.calibrate:
        net.temperature = config["temperature"] = fit_temperature(net, val_x, val.labels)
        print(f"temperature {net.temperature:.4f} (fit on validation)", flush=True)
    training_seconds = time.monotonic() - started

    test_x = model_lib.to_tensor(test.images, config)
    test_metrics = classification_metrics(predict(net, test_x).numpy(), test.labels, hp.classes)
    val_metrics = classification_metrics(predict(net, val_x).numpy(), val.labels, hp.classes)
    metrics: dict[str, Any] = {
        "test_accuracy": test_metrics["accuracy"],
        "val_accuracy": val_metrics["accuracy"],
        "per_class": test_metrics["per_class"],
        "confusion_matrix": test_metrics["confusion_matrix"],
        "expected_calibration_error": test_metrics["expected_calibration_error"],
        "val_expected_calibration_error": val_metrics["expected_calibration_error"],
        "val_per_class": val_metrics["per_class"],
        "temperature": config["temperature"],
        "training_seconds": training_seconds,
        "seed": hp.seed,
        "git_commit": os.environ.get("SCONES_GIT_COMMIT") or "unknown",
        "epochs": hp.epochs,
        "hyperparameters": {
            name: getattr(hp, name) for name in Hyperparameters.__dataclass_fields__
        },
        "classes": hp.classes,
        "counts": {"train": len(train.labels), "val": len(val.labels), "test": len(test.labels)},
        "device": str(device),
        "threads": torch.get_num_threads(),
        "history": history.__dict__,
    }

    model_dir: Path = args.model_dir
    model_lib.save_model(net, config, model_dir)
    write_plots(model_dir / "plots", history, metrics["confusion_matrix"], hp.classes)
    metrics["serving_code"] = copy_serving_code(model_dir / "code")
    metrics["monitoring_baseline"] = write_monitoring_baseline(
        model_dir, net, config, val, train_all
    )
    text = json.dumps(metrics, indent=2) + "\n"
    (model_dir / "metrics.json").write_text(text)
    if args.output_data_dir is not None:
        args.output_data_dir.mkdir(parents=True, exist_ok=True)
        (args.output_data_dir / "metrics.json").write_text(text)
    print(
        f"test_accuracy {metrics['test_accuracy']:.4f} val_accuracy {metrics['val_accuracy']:.4f} "
        f"ece {metrics['expected_calibration_error']:.4f} training_seconds {training_seconds:.1f}",
        flush=True,
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args)
    except TrainingError as error:
        message = f"train.py: error: {error}"
        print(message, file=sys.stderr)
        # SageMaker shows this file's text as the job's FailureReason.
        output_dir = os.environ.get("SM_OUTPUT_DIR")
        if output_dir and Path(output_dir).is_dir():
            (Path(output_dir) / "failure").write_text(message + "\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
