"""SageMaker's containers put code/ first on sys.path: no module there may shadow another."""

from __future__ import annotations

import sys
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parents[3] / "training_job" / "code"


def test_no_module_in_code_shadows_the_standard_library_or_torch() -> None:
    # A `profile.py` here once replaced the standard library's profiler inside the
    # container, and torch (which imports cProfile lazily) crashed.
    names = {path.stem for path in CODE_DIR.glob("*.py")}
    assert names, CODE_DIR
    assert not names & set(sys.stdlib_module_names)
    assert not names & {"torch", "numpy", "PIL", "sagemaker_inference", "sagemaker_training"}
