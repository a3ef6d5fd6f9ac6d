"""The container code (`training_job/code/`) imported from the host side: the monitor,
the training launcher, the local training runner, the benchmarks and the tests all reach
it through this module, the one place that puts
that directory on sys.path.

Those files import each other as top-level modules (`import model`), as SageMaker puts
their directory on sys.path; importing them by the same names here means one copy of
each module in a process, whoever imported it first.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

CODE_DIR = Path(__file__).resolve().parent / "code"


def put_on_path() -> None:
    """Put training_job/code first on sys.path, where SageMaker's containers put it
    (tests/training_job/code/test_serving_code.py checks no module there shadows another)."""
    if str(CODE_DIR) not in sys.path:
        sys.path.insert(0, str(CODE_DIR))


def _load(name: str) -> ModuleType:
    put_on_path()
    return importlib.import_module(name)


def imaging() -> ModuleType:
    """imaging.py: PNG/JPEG decoding to the 32x32 RGB arrays the model takes."""
    return _load("imaging")


def model() -> ModuleType:
    """model.py: the network, its ModelConfig, save/load, predict."""
    return _load("model")


def data() -> ModuleType:
    """data.py: the channel reader and the seeded validation split train.py uses."""
    return _load("data")


def hyperparameters() -> ModuleType:
    """hyperparameters.py: train.py's Hyperparameters and the parser made from them."""
    return _load("hyperparameters")


def training_loop() -> ModuleType:
    """training_loop.py: the ensemble's training loop (`fit`)."""
    return _load("training_loop")


def metrics() -> ModuleType:
    """metrics.py: accuracy, calibration (ECE, the temperature fit), the confidence gate."""
    return _load("metrics")


def familiarity() -> ModuleType:
    """familiarity.py: the model's familiarity check, fitted and calibrated at training."""
    return _load("familiarity")


def profile() -> ModuleType:
    """baseline_profile.py: the baseline profile's statistics, embeddings and predictions."""
    return _load("baseline_profile")


def container() -> ModuleType:
    """container.py: the image's entry point, its training program and the hyperparameter
    encoding that the launcher and the local training runner share with it."""
    return _load("container")
