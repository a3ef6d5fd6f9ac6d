"""The familiarity score in InvokeEndpoint's custom attributes (contract/familiarity.py)."""

from __future__ import annotations

import pytest

from contract.familiarity import (
    MAX_CUSTOM_ATTRIBUTES_LENGTH,
    FamiliarityAttributeError,
    format_attributes,
    parse_attributes,
)


def test_a_score_and_verdict_round_trip_within_sagemakers_header_rules() -> None:
    """SageMaker Runtime API reference, InvokeEndpoint, CustomAttributes: no more than 1024
    visible US-ASCII characters (RFC 7230 3.2.6), forwarded verbatim."""
    value = format_attributes(0.00990099, False)
    assert value == "familiarity=0.0099;familiar=false"
    assert len(value) <= MAX_CUSTOM_ATTRIBUTES_LENGTH
    assert all("!" <= character <= "~" for character in value)
    assert parse_attributes(value) == (0.0099, False)
    assert parse_attributes(format_attributes(1.0, True)) == (1.0, True)


@pytest.mark.parametrize("value", [None, "", "trace=abc", "Trace ID: 7"])
def test_attributes_that_say_nothing_of_familiarity_mean_unknown(value: str | None) -> None:
    """A model version trained before familiarity sends none: its answer is "unknown"."""
    assert parse_attributes(value) is None


def test_other_attributes_beside_familiarity_are_ignored() -> None:
    assert parse_attributes("trace=abc; familiarity=0.5 ;familiar=true") == (0.5, True)


@pytest.mark.parametrize(
    "value",
    [
        "familiarity=0.5",
        "familiar=true",
        "familiarity=high;familiar=true",
        "familiarity=1.5;familiar=true",
        "familiarity=nan;familiar=false",
        "familiarity=0.5;familiar=yes",
    ],
)
def test_a_malformed_familiarity_is_refused_by_name(value: str) -> None:
    with pytest.raises(FamiliarityAttributeError, match="familiar"):
        parse_attributes(value)


@pytest.mark.parametrize("score", [-0.1, 1.01, float("nan")])
def test_only_a_score_in_0_1_is_written(score: float) -> None:
    with pytest.raises(ValueError, match="familiarity"):
        format_attributes(score, True)
