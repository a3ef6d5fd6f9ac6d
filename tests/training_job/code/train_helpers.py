"""train.py run as SageMaker runs it: a subprocess with the SM_* environment contract, and
the tiny network's arguments that make each run take seconds (test_train.py,
test_train_reviewed.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.training_job.code.conftest import CODE_DIR

TINY = [
    *("--epochs", "2", "--batch-size", "20", "--widths", "8,16,16"),
    *("--members", "2", "--val-fraction", "0.2"),
]


def sagemaker_env(channels: dict[str, Path], root: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SM_")}
    env.update(
        SM_MODEL_DIR=str(root / "model"),
        SM_OUTPUT_DATA_DIR=str(root / "output" / "data"),
        SM_OUTPUT_DIR=str(root / "output"),
        SM_NUM_CPUS="1",
        SM_NUM_GPUS="0",
        SCONES_GIT_COMMIT="0123abc",
        # contract/ sits beside train.py in a job (the estimator's dependencies); here it
        # is at the repository's root.
        PYTHONPATH=str(CODE_DIR.parents[1]),
        **{f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()},
    )
    (root / "output").mkdir(parents=True, exist_ok=True)
    return env


def run_train(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(CODE_DIR / "train.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result
