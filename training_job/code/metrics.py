"""How well the classifier does: accuracy, per-class precision/recall/F1, calibration
(expected calibration error, and the softmax temperature fit that improves it), the
per-epoch history, and the plots written beside the model.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import model as model_lib
import numpy as np
import torch
from torch import nn

from contract.threshold import DEFAULT_THRESHOLD

ECE_BINS = 15


@dataclass
class History:
    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def fit_temperature(net: model_lib.Net, val_x: torch.Tensor, val_labels: np.ndarray) -> float:
    """The softmax temperature with the least log loss on the validation split."""
    net.temperature = 1.0
    net.eval()
    with torch.no_grad():
        logits = net(val_x)
    return temperature_for(logits, val_labels)


def temperature_for(logits: torch.Tensor, labels_array: np.ndarray) -> float:
    """The temperature, of a fixed grid, that minimises the log loss of `logits`."""
    logits = logits.double()
    labels = torch.from_numpy(labels_array)
    candidates = np.geomspace(0.02, 5.0, 281)
    losses = [
        float(nn.functional.cross_entropy(logits / temperature, labels))
        for temperature in candidates
    ]
    return float(candidates[int(np.argmin(losses))])


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    predicted = probabilities.argmax(1)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for index, name in enumerate(classes):
        true_positive = int(confusion[index, index])
        predicted_count = int(confusion[:, index].sum())
        actual_count = int(confusion[index].sum())
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / actual_count if actual_count else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": actual_count,
        }
    return {
        "accuracy": float((predicted == labels).mean()),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "expected_calibration_error": expected_calibration_error(probabilities, labels),
        **gate_measures(probabilities, labels),
    }


def gate_measures(
    probabilities: np.ndarray, labels: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, float | None]:
    """The registry's figures of the gate (confidence_gate): the share passed, and the
    accuracy of the ones it passes (None when it passes none, or there are no answers)."""
    if not len(labels):
        return {"gate_threshold": float(threshold), "share_past_gate": None,
                "accuracy_past_gate": None}  # fmt: skip
    gate = confidence_gate(probabilities, labels, threshold)
    return {
        "gate_threshold": float(threshold),
        "share_past_gate": gate["share_passed"],
        "accuracy_past_gate": gate["accuracy_passed"] if gate["passed"] else None,
    }


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by count."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in itertools.pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def confidence_gate(
    probabilities: np.ndarray, labels: np.ndarray, threshold: float
) -> dict[str, float | int]:
    """What the workflow's confidence filter does with these answers: the share of images
    whose top probability reaches `threshold` (the threshold filter passes those, routed
    without a person, and stops the rest), and how many of those are right."""
    passed = probabilities.max(1) >= threshold
    right = probabilities.argmax(1) == labels
    count = int(passed.sum())
    return {
        "threshold": threshold,
        "share_passed": float(passed.mean()),
        "passed": count,
        "wrong_passed": int((passed & ~right).sum()),
        "accuracy_passed": float(right[passed].mean()) if count else 0.0,
    }


def write_plots(
    plots_dir: Path, history: History, confusion: list[list[int]], classes: Sequence[str]
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display in a training container
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(4, 4))
    axis.imshow(confusion, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes)
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("test confusion matrix")
    for row, counts in enumerate(confusion):
        for column, count in enumerate(counts):
            axis.text(column, row, str(count), ha="center", va="center")
    figure.tight_layout()
    figure.savefig(plots_dir / "confusion_matrix.png", dpi=100)
    plt.close(figure)

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axis.plot(history.epoch, history.loss, label="train (smoothed labels)")
    loss_axis.plot(history.epoch, history.val_loss, label="validation")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_title("loss")
    loss_axis.legend()
    accuracy_axis.plot(history.epoch, history.train_accuracy, label="train (augmented)")
    accuracy_axis.plot(history.epoch, history.val_accuracy, label="validation")
    accuracy_axis.set_xlabel("epoch")
    accuracy_axis.set_title("accuracy")
    accuracy_axis.legend()
    figure.tight_layout()
    figure.savefig(plots_dir / "training_curves.png", dpi=100)
    plt.close(figure)
