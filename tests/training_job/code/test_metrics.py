"""metrics.py's calibration and confidence-gate measures, on hand-made answers whose
right values are known (the gate figures are what each registry version shows)."""

from __future__ import annotations

import metrics
import numpy as np
import pytest
import torch

from contract.threshold import DEFAULT_THRESHOLD


def test_the_gate_passes_what_reaches_the_threshold_and_is_judged_on_those() -> None:
    probabilities = np.array(
        [
            [0.99, 0.01],  # passes, right
            [0.93, 0.07],  # exactly the threshold: passes (the filter stops only below), right
            [0.05, 0.95],  # passes, wrong
            [0.60, 0.40],  # stopped
        ]
    )
    labels = np.array([0, 0, 0, 1])
    measured = metrics.gate_measures(probabilities, labels, threshold=0.93)
    assert measured == {
        "gate_threshold": 0.93,
        "share_past_gate": 0.75,
        "accuracy_past_gate": pytest.approx(2 / 3),
    }


def test_a_gate_that_passes_nothing_has_no_accuracy_past_it() -> None:
    measured = metrics.gate_measures(np.array([[0.5, 0.5]]), np.array([0]))
    assert measured["share_past_gate"] == 0.0
    assert measured["accuracy_past_gate"] is None
    assert measured["gate_threshold"] == DEFAULT_THRESHOLD


def test_classification_metrics_carry_the_gate_measures() -> None:
    probabilities = np.array([[0.97, 0.03], [0.2, 0.8]])
    measured = metrics.classification_metrics(probabilities, np.array([0, 1]), ["a", "b"])
    assert measured["share_past_gate"] == 0.5
    assert measured["accuracy_past_gate"] == 1.0


def test_the_confidence_gate_counts_what_passes_and_how_much_of_it_is_right() -> None:
    probabilities = np.array([[0.97, 0.03], [0.05, 0.95], [0.93, 0.07], [0.6, 0.4], [0.1, 0.9]])
    labels = np.array([0, 0, 0, 1, 1])
    gate = metrics.confidence_gate(probabilities, labels, 0.93)
    # 0.97 right, 0.95 wrong, 0.93 (exactly at the threshold passes, as the workflow's
    # filter does) right; 0.6 and 0.9 stay below.
    assert gate == {
        "threshold": 0.93,
        "share_passed": pytest.approx(0.6),
        "passed": 3,
        "wrong_passed": 1,
        "accuracy_passed": pytest.approx(2 / 3),
    }


def test_a_gate_nothing_passes_reports_zero_not_nan() -> None:
    gate = metrics.confidence_gate(np.array([[0.5, 0.5]]), np.array([0]), 0.93)
    assert gate["passed"] == 0 and gate["share_passed"] == 0.0
    assert gate["accuracy_passed"] == 0.0


def test_the_fitted_temperature_recovers_the_one_that_generated_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(0, 3, size=(4000, 2)))
    true_temperature = 2.0
    chances = (logits / true_temperature).softmax(1).numpy()
    labels = (rng.random(4000) < chances[:, 1]).astype(np.int64)
    assert metrics.temperature_for(logits, labels) == pytest.approx(true_temperature, rel=0.15)


def test_calibration_error_is_the_gap_between_confidence_and_accuracy() -> None:
    certain_and_right = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert metrics.expected_calibration_error(certain_and_right, np.array([0, 1])) == 0.0
    # Four answers at 0.8 confidence, three right: a gap of 0.05 in their one bin.
    probabilities = np.array([[0.8, 0.2]] * 4)
    error = metrics.expected_calibration_error(probabilities, np.array([0, 0, 0, 1]))
    assert error == pytest.approx(0.05)
