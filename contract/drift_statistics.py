"""The drift statistics of a window of captured answers, defined once.

The hourly monitor Lambda (handlers/monitor.py: boto3 only) publishes them as CloudWatch
metrics; `training_job monitor`'s detectors (training_job/monitor/detectors.py) test the
same statistics of the same windows, so an alarm and a report that disagree disagree
about the verdict, never about the numbers. tests/contract/test_drift_statistics.py
holds both to the same numbers.

Standard library only: it is packaged into the monitor Lambda.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

# The significance level of the Lambda's ConfidenceDrift score (see drift_score).
KS_ALPHA = 0.01


def ks_distance(sorted_a: Sequence[float], sorted_b: Sequence[float]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic of two sorted samples: the largest gap
    between their empirical distribution functions.

    The gap i/n - j/m is counted exactly, in units of 1/lcm(n, m), and divided once: the
    statistic is the nearest float to the exact fraction (scipy's ks_2samp states it so
    too; subtracting two rounded quotients can land one float off)."""
    n, m = len(sorted_a), len(sorted_b)
    common = math.gcd(n, m)
    a_step, b_step = m // common, n // common  # 1/n and 1/m in units of 1/lcm(n, m)
    i = j = 0
    widest = 0
    while i < n and j < m:
        value = min(sorted_a[i], sorted_b[j])
        while i < n and sorted_a[i] <= value:
            i += 1
        while j < m and sorted_b[j] <= value:
            j += 1
        widest = max(widest, abs(i * a_step - j * b_step))
    return widest / (a_step * n) if n and m else 0.0


def ks_critical_distance(n: int, m: int) -> float:
    """The KS distance two samples of n and m values exceed with probability KS_ALPHA when
    they come from one distribution (the asymptotic critical value)."""
    return math.sqrt(-math.log(KS_ALPHA / 2) / 2) * math.sqrt((n + m) / (n * m))


def drift_score(sorted_baseline: Sequence[float], current: Iterable[float]) -> float:
    """The KS distance over its critical value at KS_ALPHA, so that above 1 is drift
    whatever the sample sizes."""
    ordered = sorted(current)
    critical = ks_critical_distance(len(sorted_baseline), len(ordered))
    return ks_distance(sorted_baseline, ordered) / critical


def top_class(probabilities: Sequence[float]) -> int:
    """The answer's class: the index of its largest probability (the first, on a tie)."""
    return max(range(len(probabilities)), key=probabilities.__getitem__)


def below_threshold(confidences: Iterable[float], threshold: float) -> int:
    """How many top-class confidences the threshold filter stops (strictly below it)."""
    return sum(confidence < threshold for confidence in confidences)


def class_counts(predicted: Iterable[int], classes: Sequence[str]) -> dict[str, int]:
    """Predicted-class indexes counted per class name, every class present."""
    counts = dict.fromkeys(classes, 0)
    for index in predicted:
        counts[classes[index]] += 1
    return counts


def class_mix_shift(shares: Mapping[str, float], baseline_shares: Mapping[str, float]) -> float:
    """The total variation distance between two class mixes (0 same mix, 1 disjoint)."""
    return sum(abs(shares[name] - baseline_shares[name]) for name in shares) / 2
