"""SageMaker's name rule, one definition for every name this project gives a SageMaker
resource (SageMaker API reference, e.g. EndpointInfo.EndpointName and
ProductionVariant.VariantName: "Length Constraints: Maximum length of 63. Pattern:
[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")."""

from __future__ import annotations

import pytest

from contract.sagemaker_names import NAME_PATTERN


@pytest.mark.parametrize("name", ["a", "scones-image-classifier", "v2", "a--b", "A1" + "b" * 61])
def test_names_sagemaker_accepts_match(name: str) -> None:
    assert NAME_PATTERN.match(name)


@pytest.mark.parametrize(
    "name", ["", "-a", "a-", "a_b", "a.b", "a" * 64, "scones image", "endpoint\n", "a\nb"]
)
def test_names_sagemaker_refuses_do_not(name: str) -> None:
    """Over 63 characters, a leading or trailing hyphen, any other character; a trailing
    newline too (a regex `$` would let one through `.match()`)."""
    assert not NAME_PATTERN.match(name)
    assert not NAME_PATTERN.fullmatch(name)
