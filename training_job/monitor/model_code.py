"""The container code (`training_job/code/`) imported from the host side.

Those files import each other as top-level modules (`import model`), as SageMaker puts
their directory on sys.path; the monitor does the same. `profile.py` is loaded under
another name because the standard library has a `profile` module too.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

CODE_DIR = Path(__file__).resolve().parent.parent / "code"
_PROFILE_NAME = "scones_code_profile"


def _load_standard_profiler() -> None:
    """Import the standard library's `profile` while the code directory is off sys.path:
    torch imports cProfile (and so `profile`) lazily, and must not find ours."""
    saved = sys.path[:]
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != CODE_DIR]
    try:
        importlib.import_module("cProfile")
    finally:
        sys.path[:] = saved


def _ensure_on_path() -> None:
    if str(CODE_DIR) not in sys.path:
        _load_standard_profiler()
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
    if _PROFILE_NAME in sys.modules:
        return sys.modules[_PROFILE_NAME]
    _ensure_on_path()
    spec = importlib.util.spec_from_file_location(_PROFILE_NAME, CODE_DIR / "baseline_profile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PROFILE_NAME] = module
    spec.loader.exec_module(module)
    return module
