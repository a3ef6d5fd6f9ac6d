"""The drift statistics the monitor Lambda and `training_job monitor` share: their
definitions on windows whose answers are known, and scipy's KS p-value (the detectors')
computed for the same distance, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from contract.drift_statistics import (
    below_threshold,
    class_counts,
    class_mix_shift,
    drift_score,
    ks_critical_distance,
    ks_distance,
    top_class,
)


def test_ks_distance_matches_the_definition() -> None:
    assert ks_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert ks_distance([1, 2], [3, 4]) == 1.0
    assert ks_distance([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("n", "m", "decimals"), [(40, 150, 2), (1000, 25, 3), (200, 200, 1), (10_000, 700, 3)]
)
def test_scipys_ks_p_value_is_for_ks_distance_to_the_last_bit(
    n: int, m: int, decimals: int
) -> None:
    """The detectors take a KS test's statistic from ks_distance and only its p-value
    from scipy's ks_2samp: the p-value is for the same distance, identical, with ties
    (rounded values) and without, shifted and not, up to the 10,000 values of scipy's
    exact mode (a window holds at most MAX_WINDOW_RECORDS, 10,000)."""
    rng = np.random.default_rng(n + m)
    for shift in (0.0, 0.1, 0.5):
        a = rng.normal(0.0, 1.0, n).round(decimals)
        b = (rng.normal(shift, 1.0, m)).round(decimals)
        assert stats.ks_2samp(a, b).statistic == ks_distance(sorted(a), sorted(b))
        unrounded = rng.normal(shift, 1.0, m)
        assert stats.ks_2samp(a, unrounded).statistic == ks_distance(sorted(a), sorted(unrounded))


def test_drift_score_is_one_at_the_critical_distance() -> None:
    # Disjoint samples are at distance 1; over the critical distance of their sizes.
    assert drift_score([0.1, 0.2, 0.3], [0.6, 0.5]) == 1.0 / ks_critical_distance(3, 2)
    assert ks_critical_distance(40, 40) == pytest.approx(1.6276 * (2 / 40) ** 0.5, rel=1e-4)


def test_top_class_takes_the_first_on_a_tie_as_numpy_argmax_does() -> None:
    rows = [[0.5, 0.5], [0.2, 0.8], [0.9, 0.1], [0.3, 0.3, 0.4]]
    assert [top_class(row) for row in rows] == [int(np.argmax(row)) for row in rows]


def test_counts_and_shares_of_a_known_window() -> None:
    assert below_threshold([0.93, 0.9299, 0.5, 1.0], 0.93) == 2  # strictly below stops
    counts = class_counts([0, 1, 1, 1], ["bicycle", "motorcycle", "scooter"])
    assert counts == {"bicycle": 1, "motorcycle": 3, "scooter": 0}
    shares = {"bicycle": 0.25, "motorcycle": 0.75}
    assert class_mix_shift(shares, {"bicycle": 0.5, "motorcycle": 0.5}) == 0.25
    assert class_mix_shift(shares, shares) == 0.0
