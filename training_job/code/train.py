"""The training script of the bicycle/motorcycle classifier.

The project's image runs it as `train` (container.py: SageMaker's /opt/ml, or a local
job directory with --ml-root), passing the job's hyperparameters as options and its
channels and model directory as the location options; run by hand, the locations default
to the script-mode `SM_*` variables (`SM_CHANNEL_<NAME>`, `SM_MODEL_DIR`, ...).
It reads the PNGs listed in `train.lst`/`test.lst` (data.py), carves a
stratified validation split from train (the only data any choice is made on), trains
the network (model.py), evaluates on test once (metrics.py), and writes a
self-contained model directory:

  SM_MODEL_DIR/model.pth, model.json       the network (model.save_model)
  SM_MODEL_DIR/metrics.json                 test/val metrics, hyperparameters, provenance
  SM_MODEL_DIR/plots/*.png                  confusion matrix, training curves
  SM_MODEL_DIR/baseline*.{json,npy}         the drift monitor's baseline (baseline_profile)
  SM_MODEL_DIR/familiarity.npz              what the familiarity check compares each photo
                                            with, and its calibration (familiarity.py)
  SM_MODEL_DIR/code/*.py                    what SageMaker's serving container imports
  SM_OUTPUT_DATA_DIR/metrics.json           the metrics again, beside model.tar.gz

The recipe is Keller Jordan's airbench, scaled to 1,000 images: a frozen whitening first
layer, Nesterov SGD with label smoothing, a warm-up-then-decay learning rate, flip and
translate augmentation, flip test-time augmentation, plus what small data needs: strong
weight decay and an ensemble (model.Net) whose members train in parallel processes on
the CPU (`fit`). The defaults were chosen by cross-validation over the train split only
(docs/benchmarks.md, "Training accuracy"); every hyperparameter is declared once, in
`Hyperparameters` below, which also makes the command line.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import baseline_profile
import familiarity as familiarity_lib
import metrics as metrics_lib
import model as model_lib
import numpy as np
import torch
from data import (
    Split,
    TrainingError,
    augment,
    concatenate,
    read_reviewed,
    read_split,
    stratified_split,
    subset,
)
from metrics import History
from torch import nn

from contract.decisions import CLASSES
from contract.threshold import DEFAULT_THRESHOLD

CODE_DIR = Path(__file__).resolve().parent
# Modules the serving container needs next to inference.py: all but the training-only ones.
SERVING_SUFFIXES = (".py", ".txt")
TRAINING_ONLY = ("train.py", "data.py", "metrics.py")
# The model server travels in the serving image, not with each version (serve.py).
SERVER_ONLY = ("serve.py", "batching.py")
# The image's entry point (`train` and `serve`) travels in the image too.
IMAGE_ONLY = ("container.py",)
# Packages inference.py imports that live at the repository's root: the image has them
# beside this file in /opt/program (Dockerfile), as a local job has them in its code/
# (local_aws/training.py copies the launcher's DEPENDENCIES there).
SERVING_PACKAGES = ("contract",)


# --- hyperparameters -------------------------------------------------------------------


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


def conv_widths(text: str) -> list[int]:
    values = [positive_int(part) for part in text.split(",")]
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"must be three comma-separated widths, got {text}")
    return values


def option(default: Any, parse: Callable[[str], Any], help: str, env: str | None = None) -> Any:
    """A Hyperparameters field: its default, how its argument is parsed, its --help line,
    and the SM_* variable that supplies the default inside SageMaker's container."""
    metadata = {"parse": parse, "help": help, "env": env}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Hyperparameters:
    """Every setting of a training run, each declared once: build_parser makes one
    --option per field (SageMaker passes hyperparameters as arguments)."""

    epochs: int = option(80, positive_int, "passes over the training split")
    batch_size: int = option(100, positive_int, "images per SGD step")
    lr: float = option(0.2, non_negative_float, "peak learning rate (Nesterov SGD)")
    momentum: float = option(0.9, non_negative_float, "SGD momentum")
    weight_decay: float = option(5e-3, non_negative_float, "L2 weight decay")
    bias_lr_scale: float = option(
        1.0,
        non_negative_float,
        "learning-rate multiplier for the BatchNorm biases (airbench uses 64)",
    )
    warmup_fraction: float = option(
        0.2,
        fraction,
        "share of the steps over which the learning rate rises linearly to --lr; "
        "it then falls linearly to zero",
    )
    label_smoothing: float = option(
        0.2, non_negative_float, "cross-entropy label smoothing, in [0, 1)"
    )
    translate: int = option(
        2, int, "random translation augmentation, in pixels (reflect padding); 0 turns it off"
    )
    cutout: int = option(
        0,
        int,
        "side of a random square erased from each training image, in pixels; 0 turns it off",
    )
    mixup: float = option(
        0.0,
        non_negative_float,
        "mixup: each batch is blended with a shuffled copy of itself, with a weight "
        "drawn from Beta(MIXUP, MIXUP), and learns both labels in that proportion; "
        "0 turns it off",
    )
    flip: bool = option(True, boolean, "random horizontal flip augmentation")
    ema: float = option(
        0.0,
        non_negative_float,
        "decay of the exponential moving average of the weights kept as the final "
        "model (0 keeps the last weights)",
    )
    widths: list[int] = option(
        [32, 128, 128],
        conv_widths,
        "channels of the three conv groups of each ensemble member, comma-separated",
    )
    members: int = option(
        3,
        positive_int,
        "independently initialised networks whose logits are averaged; on the CPU each "
        "trains in its own process (SM_NUM_CPUS threads shared among them)",
    )
    tta_flip: bool = option(
        True,
        boolean,
        "average predictions over each image and its mirror (test-time augmentation)",
    )
    tta_translate: bool = option(
        False,
        boolean,
        "also average over the image shifted one pixel up-left and one down-right "
        "(with their mirrors when --tta-flip): 3x the inference cost",
    )
    calibrate: bool = option(
        True,
        boolean,
        "fit the softmax temperature on the validation split (minimum log loss), so "
        "the served probabilities are calibrated; false keeps temperature 1",
    )
    val_fraction: float = option(
        0.1,
        fraction,
        "share of each class in train held out for validation (stratified, seeded)",
    )
    seed: int = option(0, int, "seeds torch, numpy, random and the split")
    classes: list[str] = option(
        list(CLASSES), class_names, "class names in label order, comma-separated"
    )
    # Where the data and the outputs are: SageMaker's container contract.
    model_dir: Path | None = option(None, Path, "where the model is written", env="SM_MODEL_DIR")
    output_data_dir: Path | None = option(
        None, Path, "where extra outputs go", env="SM_OUTPUT_DATA_DIR"
    )
    train: Path | None = option(None, Path, "directory of training PNGs", env="SM_CHANNEL_TRAIN")
    train_lst: Path | None = option(
        None, Path, "directory holding train.lst", env="SM_CHANNEL_TRAIN_LST"
    )
    test: Path | None = option(None, Path, "directory of test PNGs", env="SM_CHANNEL_TEST")
    test_lst: Path | None = option(
        None, Path, "directory holding test.lst", env="SM_CHANNEL_TEST_LST"
    )
    reviewed: Path | None = option(
        None,
        Path,
        "directory of reviewed photos, added to the training part only (optional)",
        env="SM_CHANNEL_REVIEWED",
    )
    reviewed_lst: Path | None = option(
        None, Path, "directory holding reviewed.lst (optional)", env="SM_CHANNEL_REVIEWED_LST"
    )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Hyperparameters:
        hyperparameters = cls(**{item.name: getattr(args, item.name) for item in fields(cls)})
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

    def recipe(self) -> dict[str, Any]:
        """The hyperparameters proper (not the locations), as metrics.json records them."""
        return {
            item.name: getattr(self, item.name) for item in fields(self) if not item.metadata["env"]
        }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train the bicycle/motorcycle classifier (SageMaker script mode). "
        "Hyperparameters are arguments (both --name-with-dashes and --name_with_underscores "
        "work, as SageMaker passes them); data and output locations default to the "
        "SM_* environment variables SageMaker sets.",
    )
    for item in fields(Hyperparameters):
        spellings = [f"--{item.name.replace('_', '-')}"]
        if "_" in item.name:
            spellings.append(f"--{item.name}")
        env, help = item.metadata["env"], item.metadata["help"]
        if env:
            # Read when the parser is built, as SageMaker's examples read os.environ.
            default: Any = os.environ.get(env)
            help = f"{help} (default: ${env})"
        elif item.default_factory is not MISSING:
            default = item.default_factory()
        else:
            default = item.default
        parser.add_argument(
            *spellings, dest=item.name, type=item.metadata["parse"], default=default, help=help
        )
    return parser


# --- training --------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # warn_only: a few CUDA kernels (max-pool backward) have no deterministic version.
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class MemberResult:
    """What one member's training hands back (plain arrays: they cross a process boundary)."""

    state: dict[str, np.ndarray]
    loss: list[float]
    train_accuracy: list[float]
    val_logits: np.ndarray  # (epochs, val images, classes), eval mode, temperature 1
    seconds: list[float]


def member_seed(seed: int, index: int) -> int:
    """Member `index`'s own seed: its initialisation, batch order and augmentation differ
    from every other member's, and do not depend on how many members run or where."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def fit(
    hp: Hyperparameters,
    train: Split,
    val: Split,
    device: torch.device,
    progress: bool = True,
) -> tuple[model_lib.Net, model_lib.ModelConfig, History]:
    """Train the ensemble on `train`, watching `val`; returns the net, its config, the history.

    The members share nothing while they train (each learns from its own loss), so on the
    CPU each trains in its own process, with this process's torch threads divided among
    them: one thread per process is what two cores run fastest (two threads of one process
    on two busy cores wait on each other, docs/benchmarks.md). One process per member,
    even with more members than cores: three members on two cores finish in 1.5 members'
    time, not 2. On a GPU, or with one thread, they train one after another here.
    """
    pixels = train.images.reshape(-1, 3) / 255.0
    config = model_lib.ModelConfig(
        classes=hp.classes,
        mean=pixels.mean(0).tolist(),
        std=pixels.std(0).tolist(),
        widths=list(hp.widths),
        members=hp.members,
        tta_flip=hp.tta_flip,
        tta_translate=hp.tta_translate,
    )
    threads = torch.get_num_threads()
    jobs = [(hp, config, train, val, index, device, progress) for index in range(hp.members)]
    if device.type == "cpu" and hp.members > 1 and threads > 1:
        # spawn, not fork: a forked copy of a process that has run torch's thread pool
        # can deadlock in it.
        with ProcessPoolExecutor(
            hp.members,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=start_member_process,
            initargs=(max(1, threads // hp.members), os.getpid()),
        ) as pool:
            results = list(pool.map(fit_member, *zip(*jobs, strict=True)))
    else:
        results = [fit_member(*job) for job in jobs]

    net = model_lib.build_model(config)
    for member, result in zip(net.members, results, strict=True):
        member.load_state_dict(
            {name: torch.from_numpy(value) for name, value in result.state.items()}
        )
    net = model_lib.to_fast_layout(net).eval()
    history = ensemble_history(results, val.labels)
    if progress:
        print(
            f"ensemble of {hp.members}: val_acc {history.val_accuracy[-1]:.4f} "
            f"val_loss {history.val_loss[-1]:.4f}",
            flush=True,
        )
    return net, config, history


def start_member_process(threads: int, parent: int) -> None:
    """Set a member process's torch threads, and end it if train.py ends first (killed, or
    stopped by its runner): an orphan would go on training for minutes."""
    torch.set_num_threads(threads)

    def exit_when_orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=exit_when_orphaned, daemon=True).start()


def ensemble_history(results: list[MemberResult], val_labels: np.ndarray) -> History:
    """The ensemble's curves: its validation accuracy and loss per epoch from the mean of
    the members' logits (what the ensemble predicts), the training loss and accuracy as
    the members' mean, the epoch time as the slowest member's."""
    history = History()
    logits = torch.from_numpy(np.mean([result.val_logits for result in results], axis=0))
    labels = torch.from_numpy(val_labels)
    for epoch, epoch_logits in enumerate(logits, start=1):
        history.epoch.append(epoch)
        history.loss.append(float(np.mean([result.loss[epoch - 1] for result in results])))
        history.train_accuracy.append(
            float(np.mean([result.train_accuracy[epoch - 1] for result in results]))
        )
        history.val_accuracy.append(float((epoch_logits.argmax(1) == labels).float().mean()))
        history.val_loss.append(float(nn.functional.cross_entropy(epoch_logits, labels)))
        history.seconds.append(max(result.seconds[epoch - 1] for result in results))
    return history


def fit_member(
    hp: Hyperparameters,
    config: model_lib.ModelConfig,
    train: Split,
    val: Split,
    index: int,
    device: torch.device,
    progress: bool,
) -> MemberResult:
    """Train ensemble member `index` alone, as `config` describes it."""
    seed = member_seed(hp.seed, index)
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    mixup_rng = np.random.default_rng(seed)
    net = model_lib.build_model(replace(config, members=1))
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
    losses: list[float] = []
    train_accuracies: list[float] = []
    val_logits: list[np.ndarray] = []
    seconds: list[float] = []
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
            total_loss += float(loss.detach()) * len(batch)
            correct += int((logits.argmax(1) == target).sum())
        final = averaged if averaged is not None else net
        final.eval()
        with torch.no_grad():
            logits = final(val_x).double().cpu()
        losses.append(total_loss / len(images))
        train_accuracies.append(correct / len(images))
        val_logits.append(logits.numpy())
        seconds.append(time.monotonic() - started)
        if progress:
            print(
                f"member {index + 1}/{hp.members} epoch {epoch}/{hp.epochs} "
                f"loss {losses[-1]:.4f} train_acc {train_accuracies[-1]:.4f} "
                f"val_acc {float((logits.argmax(1) == val_y).float().mean()):.4f} "
                f"val_loss {float(nn.functional.cross_entropy(logits, val_y)):.4f} "
                f"seconds {seconds[-1]:.1f}",
                flush=True,
            )
    final = averaged if averaged is not None else net
    state = final.members[0].to("cpu", memory_format=torch.contiguous_format).state_dict()
    return MemberResult(
        {name: value.detach().numpy() for name, value in state.items()},
        losses,
        train_accuracies,
        np.stack(val_logits),
        seconds,
    )


def update_average(averaged: nn.Module, net: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for mean, current in zip(
            averaged.state_dict().values(), net.state_dict().values(), strict=True
        ):
            if mean.dtype.is_floating_point:
                mean.lerp_(current, 1 - decay)
            else:
                mean.copy_(current)


# --- outputs -------------------------------------------------------------------------


def copy_serving_code(code_dir: Path) -> list[str]:
    """Copy the modules SageMaker's serving container imports into `model_dir/code/`, so
    the archive serves with nothing but its code/ on the module path."""
    code_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in sorted(CODE_DIR.iterdir()):
        if (
            source.suffix in SERVING_SUFFIXES
            and source.name not in TRAINING_ONLY + SERVER_ONLY + IMAGE_ONLY
            and source.is_file()
        ):
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


# --- main ------------------------------------------------------------------------------


def choose_device() -> torch.device:
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        return torch.device("cuda")
    # The CPUs this process may run on (a container's or a job's share), not the host's.
    threads = int(os.environ.get("SM_NUM_CPUS") or 0) or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return torch.device("cpu")


def run(hp: Hyperparameters) -> dict[str, Any]:
    if hp.model_dir is None:
        raise TrainingError("no model directory: set SM_MODEL_DIR or pass --model-dir")
    train_all = read_split(hp.train, hp.train_lst, "train", hp.classes)
    test = read_split(hp.test, hp.test_lst, "test", hp.classes)
    counts = np.bincount(train_all.labels, minlength=len(hp.classes))
    for name, count in zip(hp.classes, counts, strict=True):
        if count == 0:
            raise TrainingError(
                f"class {name!r} has no training images (does --classes match the data?)"
            )
    train_indices, val_indices = stratified_split(train_all.labels, hp.val_fraction, hp.seed)
    train, val = subset(train_all, train_indices), subset(train_all, val_indices)
    reviewed = read_reviewed(hp.reviewed, hp.reviewed_lst, hp.classes, test, os.environ)
    if reviewed is not None:  # the training part only (data.read_reviewed says why)
        train = concatenate(train, reviewed.split)
    device = choose_device()
    print(
        f"training on {len(train.labels)} images "
        f"({reviewed.record['added'] if reviewed else 0} of them reviewed), "
        f"validating on {len(val.labels)}, "
        f"testing on {len(test.labels)}; device {device}, threads {torch.get_num_threads()}",
        flush=True,
    )

    started = time.monotonic()
    net, config, history = fit(hp, train, val, device)
    val_x = model_lib.to_tensor(val.images, config)
    if hp.calibrate:
        net.temperature = config.temperature = metrics_lib.fit_temperature(net, val_x, val.labels)
        print(f"temperature {net.temperature:.4f} (fit on validation)", flush=True)
    # Fitted on the training part, calibrated on the validation split (familiarity.py).
    familiarity = familiarity_lib.fit(net, config, train.images, train.labels, val.images)
    training_seconds = time.monotonic() - started

    test_x = model_lib.to_tensor(test.images, config)
    test_probabilities = model_lib.predict(net, test_x).numpy()
    val_probabilities = model_lib.predict(net, val_x).numpy()
    test_metrics = metrics_lib.classification_metrics(test_probabilities, test.labels, hp.classes)
    val_metrics = metrics_lib.classification_metrics(val_probabilities, val.labels, hp.classes)
    metrics: dict[str, Any] = {
        "test_accuracy": test_metrics["accuracy"],
        "val_accuracy": val_metrics["accuracy"],
        "per_class": test_metrics["per_class"],
        "confusion_matrix": test_metrics["confusion_matrix"],
        "expected_calibration_error": test_metrics["expected_calibration_error"],
        "val_expected_calibration_error": val_metrics["expected_calibration_error"],
        # The confidence gate on the test split (metrics.gate_measures), as the registry
        # shows each model version beside the others.
        "gate_threshold": test_metrics["gate_threshold"],
        "share_past_gate": test_metrics["share_past_gate"],
        "accuracy_past_gate": test_metrics["accuracy_past_gate"],
        "val_per_class": val_metrics["per_class"],
        "temperature": config.temperature,
        # The workflow's default confidence filter, applied to the test answers.
        "confidence_gate": metrics_lib.confidence_gate(
            test_probabilities, test.labels, DEFAULT_THRESHOLD
        ),
        # The whole gate: confident and familiar (familiarity.py), on the test split.
        "familiarity": familiarity_lib.gate_measures(
            familiarity, net, test_x, test_probabilities, test.labels, DEFAULT_THRESHOLD
        ),
        "training_seconds": training_seconds,
        "seed": hp.seed,
        "git_commit": os.environ.get("SCONES_GIT_COMMIT") or "unknown",
        "epochs": hp.epochs,
        "hyperparameters": hp.recipe(),
        "classes": hp.classes,
        "counts": {"train": len(train.labels), "val": len(val.labels), "test": len(test.labels)},
        "reviewed": reviewed.record if reviewed is not None else None,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "history": history.__dict__,
    }

    model_dir = hp.model_dir
    model_lib.save_model(net, config, model_dir)
    familiarity.save(model_dir)
    metrics_lib.write_plots(model_dir / "plots", history, metrics["confusion_matrix"], hp.classes)
    metrics["serving_code"] = copy_serving_code(model_dir / "code")
    baseline_profile.write_baseline(
        model_dir, net, config, val.images, val.byte_sizes, train_all.images, train_all.byte_sizes
    )
    # What is on disk, not a flag: the monitor needs both files.
    metrics["monitoring_baseline"] = [
        name
        for name in (baseline_profile.BASELINE_FILE, baseline_profile.EMBEDDINGS_FILE)
        if (model_dir / name).is_file()
    ]
    text = json.dumps(metrics, indent=2) + "\n"
    (model_dir / "metrics.json").write_text(text)
    if hp.output_data_dir is not None:
        hp.output_data_dir.mkdir(parents=True, exist_ok=True)
        (hp.output_data_dir / "metrics.json").write_text(text)
    print(
        f"test_accuracy {metrics['test_accuracy']:.4f} val_accuracy {metrics['val_accuracy']:.4f} "
        f"ece {metrics['expected_calibration_error']:.4f} "
        f"past_gate {metrics['confidence_gate']['share_passed']:.3f} "
        f"past_whole_gate {metrics['familiarity']['share_passed']:.3f} "
        f"training_seconds {training_seconds:.1f}",
        flush=True,
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(Hyperparameters.from_args(args))
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
