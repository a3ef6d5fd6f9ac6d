"""The container code (`training_job/code/`) imported from the host side.

Those files import each other as top-level modules (`import model`), as SageMaker puts
their directory on sys.path; the monitor does the same.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

CODE_DIR = Path(__file__).resolve().parent.parent / "code"


def _ensure_on_path() -> None:
    if str(CODE_DIR) not in sys.path:
        sys.path.insert(0, str(CODE_DIR))


def imaging() -> ModuleType:
    _ensure_on_path()
    return importlib.import_module("imaging")


def model() -> ModuleType:
    _ensure_on_path()
    return importlib.import_module("model")


def train() -> ModuleType:
    """train.py, for its split reader and seeded validation split."""
    _ensure_on_path()
    return importlib.import_module("train")


def profile() -> ModuleType:
    """baseline_profile.py: the baseline profile's statistics, embeddings and predictions."""
    _ensure_on_path()
    return importlib.import_module("baseline_profile")
