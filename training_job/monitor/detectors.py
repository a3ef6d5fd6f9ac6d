"""Drift detectors: small estimator-like objects, `fit(baseline)` then `test(window)`.

Each test compares one window of captured traffic with the baseline (the model's answers
and embeddings on the validation split; the input statistics of the whole training split,
see baseline_profile.py) and returns Findings: a statistic, a p-value, the threshold and a
verdict. Each declares its kind (INPUT, EMBEDDING or ANSWERS: what it watches); the
registry in drift_monitor.py runs every registered detector on each window and corrects
their p-values together.

What each detector catches:
- InputStatisticsDetector: changes in what reaches the endpoint before the model sees
  it (camera, lighting, compression, resizing, noise, colour casts, another upload
  format). Two-sample Kolmogorov-Smirnov per statistic (luma, sharpness and noise, the
  first two moments of both opponent colour axes, and the red-blue balance), chi-square
  of homogeneity for the format mix.
- EmbeddingDetector: changes in what the model "sees", including content the input
  statistics miss (new objects, new backgrounds, out-of-distribution images). Maximum
  mean discrepancy on penultimate-layer embeddings, RBF kernel with the median heuristic,
  permutation p-value.
- ClassMixDetector: label shift (more motorcycles than usual) as the model predicts it.
  Chi-square of homogeneity on predicted-class counts.
- ConfidenceDetector: the model becoming unsure (or overconfident) on new data.
  Two-sample KS on the top-class probability.
- LowConfidenceDetector: more traffic than usual failing the workflow's 0.93 threshold.
  One-sided conditional binomial test of two rates (Przyborowski & Wilenski, 1940).
- performance(): accuracy, precision and recall when ground truth arrives later.

The statistics the hourly monitor Lambda publishes are defined once, in
contract/drift_statistics.py (pure Python), and the detectors compute them there: the
class counts, the share below the threshold, the KS distance. A KS test's p-value is
scipy's (ks_2samp: the exact two-sample distribution up to 10,000 values, every window),
for the same distance to the last bit (tests/contract/test_drift_statistics.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from scipy import stats

from contract.drift_statistics import below_threshold, class_counts, ks_distance
from training_job.monitor.baseline import Baseline

# Below this many values a two-sample test says little; the window is reported as thin.
MIN_SAMPLES = 20

# What a detector watches (its `kind`); drift_monitor.py says what each kind's alert means.
INPUT, EMBEDDING, ANSWERS = "input", "embedding", "answers"


@dataclass
class Window:
    """One window of captured traffic, as arrays (only records that decoded as images)."""

    statistics: dict[str, np.ndarray]
    upload_bytes: np.ndarray
    content_types: Counter[str]
    probabilities: np.ndarray
    embeddings: np.ndarray | None = None
    labels: np.ndarray | None = None  # class index per record, -1 where unknown
    # Per embedded record, whether the model's familiarity check calls it unfamiliar
    # (None: the model version has no familiarity statistics).
    unfamiliar: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.probabilities)


@dataclass
class Finding:
    detector: str
    test: str
    statistic: float
    p_value: float
    threshold: float
    p_adjusted: float = math.nan
    alert: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        # Plain floats whatever a detector computed with (numpy's are not JSON numbers, and
        # their comparisons give numpy booleans): summary.json and the metrics need these.
        self.statistic, self.p_value = float(self.statistic), float(self.p_value)

    def as_dict(self) -> dict[str, Any]:
        return {
            name: (None if isinstance(v, float) and math.isnan(v) else v)
            for name, v in self.__dict__.items()
        }


class Detector(Protocol):
    name: str  # its findings' `detector`
    kind: str  # INPUT, EMBEDDING or ANSWERS: what it watches

    def fit(self, baseline: Baseline) -> Detector: ...

    def test(self, window: Window) -> list[Finding]: ...


def _finding(detector: str, test: str, statistic: float, p_value: float) -> Finding:
    return Finding(detector, test, float(statistic), float(p_value), threshold=math.nan)


def _kolmogorov_smirnov(reference: np.ndarray, observed: np.ndarray) -> tuple[float, float]:
    """The two-sample KS distance (contract's, the Lambda's ConfidenceDrift is built on it)
    and its p-value. Pure Python measured as fast as scipy's numpy version here (one
    window's 14 input statistics: 6.9 against 5.6 ms at 200 records, 66 against 68 ms at
    10,000), so the one definition computes the statistic and scipy only its p-value."""
    statistic = ks_distance(sorted(reference.tolist()), sorted(observed.tolist()))
    return statistic, float(stats.ks_2samp(reference, observed).pvalue)


def _homogeneity(reference: dict[str, int], observed: dict[str, int]) -> tuple[float, float]:
    """Chi-square test that two samples of categories share one distribution."""
    categories = sorted(set(reference) | set(observed))
    table = np.array(
        [[reference.get(c, 0) for c in categories], [observed.get(c, 0) for c in categories]],
        dtype=np.float64,
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


class InputStatisticsDetector:
    """Per-image input statistics and the upload's size and format, against the baseline."""

    name = "input"
    kind = INPUT

    def fit(self, baseline: Baseline) -> InputStatisticsDetector:
        self.reference = dict(baseline.statistics)
        self.upload_bytes = baseline.upload_bytes
        self.content_types = baseline.content_types
        return self

    def test(self, window: Window) -> list[Finding]:
        if window.size < MIN_SAMPLES:
            return []
        findings = []
        for name, reference in self.reference.items():
            observed = window.statistics.get(name)
            if observed is None or len(observed) < MIN_SAMPLES:
                continue
            findings.append(_finding(self.name, name, *_kolmogorov_smirnov(reference, observed)))
        if self.upload_bytes is not None and len(window.upload_bytes) >= MIN_SAMPLES:
            statistic, p_value = _kolmogorov_smirnov(self.upload_bytes, window.upload_bytes)
            findings.append(_finding(self.name, "upload_bytes", statistic, p_value))
        if self.content_types is not None:
            statistic, p_value = _homogeneity(self.content_types, dict(window.content_types))
            findings.append(_finding(self.name, "content_type", statistic, p_value))
        return findings


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Small matrix products on one thread. On this 2-core machine a multi-threaded BLAS
    (numpy's OpenBLAS or torch's MKL) took 8-15 ms for a 100×128 by 128×64 product whenever
    the other library's threads or other processes held the cores: its threads waited for
    one another. On one thread the same product takes 0.03 ms."""
    threads = torch.get_num_threads()
    if threads != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads != 1:
            torch.set_num_threads(threads)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ta = torch.from_numpy(np.asarray(a, dtype=np.float64))
    tb = torch.from_numpy(np.asarray(b, dtype=np.float64))
    with _one_torch_thread():
        distances = (ta * ta).sum(1)[:, None] + (tb * tb).sum(1)[None, :] - 2.0 * ta @ tb.T
    return distances.clamp_min_(0.0).numpy()


class EmbeddingDetector:
    """Maximum mean discrepancy between baseline and window embeddings (Gretton et al.,
    2012), RBF kernel whose bandwidth is the median baseline distance (fixed at fit, so
    every window is measured with the same kernel), p-value from up to `permutations`
    random relabellings of the pooled sample, computed as one matrix product per chunk.

    `dimensions` compares only the baseline's first columns (the first ensemble members'
    share, see embedding.py). Permuting stops early by Besag & Clifford's (1991) sequential
    rule once `stop_after` relabellings have reached the observed statistic: after L
    relabellings with h exceedances the p-value h / L is exact, and a window that drifted
    (few exceedances) still gets every permutation, so only windows far from an alert get
    cheaper. `stop_after=None` always runs every permutation."""

    name = "embedding"
    kind = EMBEDDING

    def __init__(
        self,
        permutations: int = 10_000,
        seed: int = 0,
        chunk: int = 250,
        dimensions: int | None = None,
        stop_after: int | None = 20,
    ) -> None:
        if permutations < 1:
            raise ValueError("permutations must be at least 1")
        if dimensions is not None and dimensions < 1:
            raise ValueError("dimensions must be at least 1")
        if stop_after is not None and stop_after < 1:
            raise ValueError("stop_after must be at least 1")
        self.permutations = permutations
        self.seed = seed
        self.chunk = chunk
        self.dimensions = dimensions
        self.stop_after = stop_after

    def fit(self, baseline: Baseline) -> EmbeddingDetector:
        reference = np.asarray(baseline.embeddings, dtype=np.float64)
        if self.dimensions is not None:
            if self.dimensions > reference.shape[1]:
                raise ValueError(
                    f"the baseline embeddings have {reference.shape[1]} dimensions, fewer "
                    f"than the {self.dimensions} asked for: another model?"
                )
            reference = reference[:, : self.dimensions]
        self.reference = reference
        squared = _squared_distances(self.reference, self.reference)
        upper = squared[np.triu_indices(len(self.reference), k=1)]
        median = float(np.median(upper[upper > 0])) if (upper > 0).any() else 1.0
        self.gamma = 1.0 / median  # k(x, y) = exp(-|x - y|² / median²-distance)
        self.kernel_xx = np.exp(-self.gamma * squared)
        return self

    def mmd_squared(self, kernel: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Biased MMD² for each row of `weights` (+1/n on one sample, -1/m on the other)."""
        tw = torch.from_numpy(np.asarray(weights, dtype=np.float64))
        tk = torch.from_numpy(np.asarray(kernel, dtype=np.float64))
        with _one_torch_thread():
            return ((tw @ tk) * tw).sum(1).numpy()

    def test(self, window: Window) -> list[Finding]:
        if window.embeddings is None or len(window.embeddings) < MIN_SAMPLES:
            return []
        observed = np.asarray(window.embeddings, dtype=np.float64)
        if observed.shape[1] != self.reference.shape[1]:
            raise ValueError(
                f"window embeddings have {observed.shape[1]} dimensions, the baseline "
                f"{self.reference.shape[1]}: another model?"
            )
        n, m = len(self.reference), len(observed)
        kernel_xy = np.exp(-self.gamma * _squared_distances(self.reference, observed))
        kernel_yy = np.exp(-self.gamma * _squared_distances(observed, observed))
        kernel = np.block([[self.kernel_xx, kernel_xy], [kernel_xy.T, kernel_yy]])
        signs = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
        statistic = float(self.mmd_squared(kernel, signs[None, :])[0])
        return [_finding(self.name, "mmd", statistic, self._p_value(kernel, signs, statistic))]

    def _p_value(self, kernel: np.ndarray, signs: np.ndarray, statistic: float) -> float:
        rng = np.random.default_rng(self.seed)
        exceed = 0
        for start in range(0, self.permutations, self.chunk):
            count = min(self.chunk, self.permutations - start)
            weights = rng.permuted(np.tile(signs, (count, 1)), axis=1)
            hits = self.mmd_squared(kernel, weights) >= statistic
            if self.stop_after is not None and exceed + int(hits.sum()) >= self.stop_after:
                # The relabelling that brought the stop_after-th exceedance ends the test.
                done = start + int(np.argmax(np.cumsum(hits) >= self.stop_after - exceed)) + 1
                return self.stop_after / done
            exceed += int(hits.sum())
        return (exceed + 1) / (self.permutations + 1)


class ClassMixDetector:
    """Predicted-class counts of the window against the baseline's."""

    name = "output"
    kind = ANSWERS

    def fit(self, baseline: Baseline) -> ClassMixDetector:
        self.classes = baseline.classes
        self.reference = class_counts(baseline.probabilities.argmax(axis=1).tolist(), self.classes)
        return self

    def counts(self, window: Window) -> dict[str, int]:
        """The window's predicted-class counts (numpy's argmax: the first on a tie, as
        contract.drift_statistics.top_class)."""
        return class_counts(window.probabilities.argmax(axis=1).tolist(), self.classes)

    def test(self, window: Window) -> list[Finding]:
        if window.size < MIN_SAMPLES:
            return []
        statistic, p_value = _homogeneity(self.reference, self.counts(window))
        return [_finding(self.name, "class_mix", statistic, p_value)]


class ConfidenceDetector:
    """The distribution of the top-class probability, two-sample KS."""

    name = "output"
    kind = ANSWERS

    def fit(self, baseline: Baseline) -> ConfidenceDetector:
        self.reference = baseline.confidences
        return self

    def test(self, window: Window) -> list[Finding]:
        if window.size < MIN_SAMPLES:
            return []
        statistic, p_value = _kolmogorov_smirnov(self.reference, window.probabilities.max(axis=1))
        return [_finding(self.name, "confidence", statistic, p_value)]


class LowConfidenceDetector:
    """Whether more of the window than of the baseline falls below the threshold.

    Given k0 of n0 baseline and k1 of n1 window records below it, under "same rate" k1 is
    Binomial(k0 + k1, n1 / (n0 + n1)); the test is one-sided, as fewer unsure answers are
    no reason to page anyone.
    """

    name = "output"
    kind = ANSWERS

    def fit(self, baseline: Baseline) -> LowConfidenceDetector:
        self.threshold = baseline.threshold
        self.reference_low = below_threshold(baseline.confidences.tolist(), self.threshold)
        self.reference_count = baseline.count
        return self

    def test(self, window: Window) -> list[Finding]:
        if window.size < MIN_SAMPLES:
            return []
        low = below_threshold(window.probabilities.max(axis=1).tolist(), self.threshold)
        total = low + self.reference_low
        rate = low / window.size
        if total == 0:
            return [_finding(self.name, "low_confidence_rate", rate, 1.0)]
        share = window.size / (window.size + self.reference_count)
        p_value = stats.binomtest(low, total, share, alternative="greater").pvalue
        return [_finding(self.name, "low_confidence_rate", rate, p_value)]


def performance(window: Window, classes: list[str]) -> dict[str, Any] | None:
    """Accuracy and per-class precision and recall over the window's labelled records."""
    if window.labels is None:
        return None
    known = window.labels >= 0
    if not known.any():
        return None
    truth = window.labels[known]
    predicted = window.probabilities[known].argmax(axis=1)
    result: dict[str, Any] = {
        "labelled": int(known.sum()),
        "accuracy": float((truth == predicted).mean()),
    }
    for index, name in enumerate(classes):
        predicted_here = predicted == index
        actual_here = truth == index
        hits = float((predicted_here & actual_here).sum())
        result[f"precision_{name}"] = hits / predicted_here.sum() if predicted_here.any() else None
        result[f"recall_{name}"] = hits / actual_here.sum() if actual_here.any() else None
    return result
