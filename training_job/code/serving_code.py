"""What a model archive's code/ holds: the modules SageMaker's serving container imports
beside inference.py, and the packages they import (contract/), so each model version
serves with nothing but its own code/ on the module path."""

from __future__ import annotations

import shutil
from pathlib import Path

from data import TrainingError

CODE_DIR = Path(__file__).resolve().parent
# Modules the serving container needs next to inference.py: all but the training-only ones.
SERVING_SUFFIXES = (".py", ".txt")
TRAINING_ONLY = (
    "train.py",
    "hyperparameters.py",
    "training_loop.py",
    "serving_code.py",
    "data.py",
    "metrics.py",
)
# The model server travels in the serving image, not with each version (serve.py).
SERVER_ONLY = ("serve.py", "batching.py")
# The image's entry point (`train` and `serve`) travels in the image too.
IMAGE_ONLY = ("container.py",)
# Packages inference.py imports that live at the repository's root: the image has them
# beside this file in /opt/program (Dockerfile), as a local job has them in its code/
# (local_aws/training.py copies the launcher's DEPENDENCIES there).
SERVING_PACKAGES = ("contract",)


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
