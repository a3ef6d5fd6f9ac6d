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
hyperparameters.py's `Hyperparameters`, which also makes the command line; the loop that
trains the members is training_loop.py; what the model's code/ holds, serving_code.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import baseline_profile
import familiarity as familiarity_lib
import metrics as metrics_lib
import model as model_lib
import numpy as np
import torch
from data import (
    TrainingError,
    concatenate,
    read_reviewed,
    read_split,
    stratified_split,
    subset,
)
from hyperparameters import Hyperparameters, build_parser
from serving_code import copy_serving_code
from training_loop import fit

from contract.threshold import DEFAULT_THRESHOLD


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
