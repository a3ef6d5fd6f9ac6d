"""contract.threshold: the one default and the one reading of THRESHOLD, shared by the
threshold filter, the scheduled monitor and the baseline profile."""

from __future__ import annotations

import pytest

from contract.threshold import (
    DEFAULT_THRESHOLD,
    ThresholdError,
    parse_threshold,
    threshold_from_environment,
)
from training_job import model_code


@pytest.mark.parametrize("environ", [{}, {"THRESHOLD": ""}, {"THRESHOLD": "  "}])
def test_unset_or_blank_is_the_default(environ: dict[str, str]) -> None:
    assert threshold_from_environment(environ) == DEFAULT_THRESHOLD == 0.93


@pytest.mark.parametrize(("raw", "value"), [("0.5", 0.5), (" 0.96 ", 0.96), ("1", 1.0)])
def test_a_number_in_the_open_closed_unit_interval_is_read(raw: str, value: float) -> None:
    assert threshold_from_environment({"THRESHOLD": raw}) == value


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("high", "must be a number, got 'high'"),
        ("93%", "must be a number"),
        ("0x1p-1", "must be a number"),
        ("0", r"must be in \(0, 1\]"),
        ("-0.5", r"must be in \(0, 1\]"),
        ("1.01", r"must be in \(0, 1\]"),
        ("nan", r"must be in \(0, 1\]"),
        ("inf", r"must be in \(0, 1\]"),
        ("9" * 1000, r"must be in \(0, 1\], got '9{40}'$"),  # echoed cut short
    ],
)
def test_anything_else_is_refused_with_the_setting_named(raw: str, message: str) -> None:
    with pytest.raises(ThresholdError, match=f"THRESHOLD {message}"):
        parse_threshold(raw)


def test_the_baseline_profile_records_the_contracts_threshold() -> None:
    # What the baseline records as "confidence_threshold" (its profiling threshold, which
    # the scheduled monitor compares with the filter's).
    assert model_code.profile().CONFIDENCE_THRESHOLD == DEFAULT_THRESHOLD
