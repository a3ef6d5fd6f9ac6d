"""training_job/code/metrics.py's gate measures: what the workflow's confidence gate does
with a model's test answers (the figures each registry version shows)."""

from __future__ import annotations

import metrics
import numpy as np
import pytest

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
