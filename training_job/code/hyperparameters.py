"""Every setting of a training run, each declared once (`Hyperparameters`), and the
command line made from them (`build_parser`): SageMaker passes hyperparameters as
`--name value` arguments, and the data and output locations default to the script-mode
`SM_*` variables (`SM_CHANNEL_<NAME>`, `SM_MODEL_DIR`, ...). train.py runs them;
container.py checks a job's hyperparameters against them before it does."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from data import TrainingError

from contract.decisions import CLASSES


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
