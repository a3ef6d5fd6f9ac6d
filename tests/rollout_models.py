"""Model versions for the rollout's tests and benchmark, made as tests/sample_model.py
makes its model (the project's network after a few SGD steps, packaged as the training
job packages it), then changed on purpose:

- "good": the same network at temperature 1e-6, so its answers are confident (the
  workflow's filter passes them) and its classes are the trained network's; its
  baseline.json is the real writer's profile of it on test images (as are the other
  kinds with its weights).
- "constant": every head weight zeroed: it answers [0.5, 0.5] to every image, a model
  that learned nothing (doubtful under any threshold).
- "erroring": model.json's normalisation has two channels instead of three: it loads,
  then fails on every request (the container answers 500).
- "broken-code": the good weights, and a code/inference.py whose `predict_fn` raises on
  every request: only its own code can fail its requests (local_aws/endpoint/container.py
  runs each version's code in its own process, as SageMaker runs each variant's).
- "slow": the good model, and a `predict_fn` that first sleeps SLOW_SECONDS.
- "unimportable": the good weights, and a code/inference.py that cannot be imported (it
  imports a module the version does not ship): its container never starts.
- "confident": answers [0.0, 1.0] to every image, sure of itself (never doubtful): the
  last conv group's normalisation outputs a constant and the head reads it as the second
  class. The trained network names that class least often (a few steps of training leave
  it answering the first), so this version's answers are mostly wrong, at confidence 1.0.
  Its own baseline profiles it as it is (constant): a version's profile shares its faults.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from tests import sample_model
from training_job import model_code

KINDS = ("good", "constant", "erroring", "broken-code", "slow", "unimportable", "confident")
SLOW_SECONDS = 1.0
# What each code-changing kind appends to a file of code/ (sample_model.package_model).
BROKEN_PREDICT = """

def predict_fn(data, model):
    raise RuntimeError("this version's predict_fn fails on every request")
"""
SLOW_PREDICT = f"""

import time as _time

_predict_fn = predict_fn


def predict_fn(data, model):
    _time.sleep({SLOW_SECONDS})
    return _predict_fn(data, model)
"""
UNIMPORTABLE = """

import a_module_this_version_does_not_ship  # noqa: E402, F401
"""
CODE_ADDITIONS = {
    "broken-code": {"inference.py": BROKEN_PREDICT},
    "slow": {"inference.py": SLOW_PREDICT},
    "unimportable": {"inference.py": UNIMPORTABLE},
}


def make_version(trained_dir: Path, kind: str, work: Path, images: np.ndarray) -> Path:
    """model.tar.gz of `kind` (KINDS) made from the trained model in `trained_dir`."""
    if kind not in KINDS:
        raise ValueError(f"no model kind {kind!r}")
    model_dir = work / f"{kind}-model"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(trained_dir, model_dir)
    config_path = model_dir / "model.json"
    config = json.loads(config_path.read_text())
    config["temperature"] = 1e-6
    if kind == "erroring":
        config["mean"], config["std"] = config["mean"][:2], config["std"][:2]
    config_path.write_text(json.dumps(config))
    weights = model_dir / "model.pth"
    if kind in ("constant", "confident"):
        state = torch.load(weights, map_location="cpu", weights_only=True)
        for name in state:
            if name.endswith("head.weight"):
                state[name].zero_()
                if kind == "confident":
                    state[name][1] = 1.0  # the second class's logit: the sum of the features
            if kind == "confident" and name.endswith("features.3.norm2.weight"):
                state[name].zero_()  # every feature is then GELU(bias) = GELU(1) > 0
            if kind == "confident" and name.endswith("features.3.norm2.bias"):
                state[name].fill_(1.0)
        torch.save(state, weights)
    archive = work / f"{kind}.tar.gz"
    sample_model.package_model(model_dir, archive, CODE_ADDITIONS.get(kind))
    if kind not in ("constant", "erroring"):  # their own baseline (confident: constant too)
        _add_baseline(model_dir, archive, images)
    return archive


def _add_baseline(model_dir: Path, archive: Path, images: np.ndarray) -> None:
    """The real writer's baseline.json of the model in `model_dir`, added to `archive`."""
    model = model_code.model()
    net, config = model.load_model(model_dir)
    with tempfile.TemporaryDirectory() as scratch:
        model_code.profile().write_baseline(Path(scratch), net, config, images, None)
        repacked = Path(scratch) / "model.tar.gz"
        with tarfile.open(archive, "r:gz") as source, tarfile.open(repacked, "w:gz") as target:
            for member in source.getmembers():
                target.addfile(member, source.extractfile(member) if member.isfile() else None)
            target.add(Path(scratch) / "baseline.json", arcname="baseline.json")
        shutil.move(repacked, archive)
