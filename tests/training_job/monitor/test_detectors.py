"""Each detector on synthetic data with known answers: quiet without drift, loud with it."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tests.training_job.monitor.drift_helpers import baseline, window
from training_job.monitor.detectors import (
    ANSWER_DRIFT,
    INPUT_DRIFT,
    NO_DRIFT,
    ClassMixDetector,
    ConfidenceDetector,
    DriftMonitor,
    EmbeddingDetector,
    Finding,
    InputStatisticsDetector,
    LowConfidenceDetector,
    Window,
    describe_drift,
    drift_kind,
    holm,
    performance,
)

STATS = ("brightness", "contrast", "noise")


def alerts(findings: list[Finding]) -> set[str]:
    return {f.test for f in findings if f.alert}


def test_no_drift_false_alarm_rate_is_within_alpha() -> None:
    trials, raised, ks_p_values = 60, 0, []
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        monitor = DriftMonitor(alpha=0.05, permutations=200, seed=seed).fit(baseline(rng))
        findings = monitor.test(window(rng))
        raised += any(f.alert for f in findings)
        ks_p_values += [f.p_value for f in findings if f.test == "brightness"]
    # Holm bounds the per-window rate by alpha = 5%: 3 expected in 60; 10 or more has
    # probability below 0.1% if the bound holds.
    assert raised < 10
    # Raw KS p-values under no drift are roughly uniform.
    assert 0.0 <= float(np.mean(np.array(ks_p_values) < 0.2)) <= 0.4
    assert 0.3 < float(np.median(ks_p_values)) < 0.7


@pytest.mark.parametrize(
    ("drift", "expected"),
    [
        ({"brightness": 0.6}, "brightness"),
        ({"content_type": "image/jpeg"}, "content_type"),
        ({"shift": 0.6}, "mmd"),
        ({"motorcycle_share": 0.9}, "class_mix"),
        ({"sureness": 1.5}, "confidence"),
        ({"sureness": 1.5}, "low_confidence_rate"),
    ],
)
def test_clear_drift_is_caught_by_the_test_made_for_it(drift: dict, expected: str) -> None:
    rng = np.random.default_rng(1)
    monitor = DriftMonitor(alpha=0.01).fit(baseline(rng))
    findings = monitor.test(window(rng, **drift))
    assert expected in alerts(findings)


def test_each_detector_reports_statistic_p_value_threshold_and_verdict() -> None:
    rng = np.random.default_rng(2)
    reference = baseline(rng)
    current = window(rng, motorcycle_share=0.95)
    for detector in (
        InputStatisticsDetector(),
        EmbeddingDetector(permutations=100),
        ClassMixDetector(),
        ConfidenceDetector(),
        LowConfidenceDetector(),
    ):
        findings = holm(detector.fit(reference).test(current), alpha=0.01)
        assert findings, detector
        for finding in findings:
            assert 0.0 <= finding.p_value <= finding.p_adjusted <= 1.0
            assert finding.threshold == 0.01
            assert finding.alert == (finding.p_adjusted <= 0.01)
            assert np.isfinite(finding.statistic)


def test_holm_adjusts_as_the_textbook_does() -> None:
    findings = [Finding("d", str(i), 0.0, p, 0.0) for i, p in enumerate([0.01, 0.04, 0.03, 0.005])]
    holm(findings, alpha=0.05)
    assert [f.p_adjusted for f in findings] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [f.alert for f in findings] == [True, False, False, True]


def test_thin_windows_get_no_verdict_instead_of_a_noisy_one() -> None:
    rng = np.random.default_rng(3)
    monitor = DriftMonitor(permutations=50).fit(baseline(rng))
    assert monitor.test(window(rng, n=5, brightness=0.9)) == []


def test_embeddings_of_another_model_are_refused() -> None:
    rng = np.random.default_rng(4)
    detector = EmbeddingDetector(permutations=10).fit(baseline(rng))
    current = window(rng)
    current.embeddings = np.zeros((200, 3))
    with pytest.raises(ValueError, match="another model"):
        detector.test(current)


def test_low_confidence_test_is_one_sided() -> None:
    rng = np.random.default_rng(5)
    detector = LowConfidenceDetector().fit(baseline(rng))
    surer = window(rng, sureness=40.0)
    (finding,) = detector.test(surer)
    assert finding.p_value > 0.5


def test_performance_counts_only_labelled_records() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    current = Window({}, np.zeros(5), Counter(), probabilities, labels=np.array([0, 1, 1, 0, -1]))
    result = performance(current, ["bicycle", "motorcycle"])
    assert result is not None
    assert result["labelled"] == 4
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["precision_bicycle"] == pytest.approx(0.5)
    assert result["recall_motorcycle"] == pytest.approx(0.5)
    assert performance(Window({}, np.zeros(1), Counter(), probabilities[:1]), ["a", "b"]) is None


@pytest.mark.parametrize(
    ("drift", "kind", "words"),
    [
        ({}, NO_DRIFT, "no drift"),
        ({"brightness": 0.7}, INPUT_DRIFT, "input drift, model answers unchanged"),
        ({"shift": 0.8}, INPUT_DRIFT, "input drift, model answers unchanged"),
        ({"motorcycle_share": 0.95}, ANSWER_DRIFT, "model answers moved, inputs unchanged"),
    ],
)
def test_drift_kind_separates_moved_inputs_from_moved_answers(
    drift: dict, kind: str, words: str
) -> None:
    rng = np.random.default_rng(6)
    monitor = DriftMonitor(alpha=0.01, permutations=2000).fit(baseline(rng))
    findings = monitor.test(window(rng, **drift))
    assert drift_kind(findings) == kind
    assert describe_drift(findings) == words


def test_answers_moved_with_the_inputs_says_both() -> None:
    rng = np.random.default_rng(7)
    monitor = DriftMonitor(alpha=0.01, permutations=2000).fit(baseline(rng))
    findings = monitor.test(window(rng, brightness=0.7, motorcycle_share=0.95))
    assert drift_kind(findings) == ANSWER_DRIFT
    assert describe_drift(findings) == "model answers moved, inputs moved too"
