"""How the model's familiarity score travels with its answer: InvokeEndpoint's custom attributes.

The response body stays the seed's JSON list of probabilities. The score rides in the
response's `X-Amzn-SageMaker-Custom-Attributes` header, which SageMaker forwards from
the container verbatim and botocore returns as InvokeEndpoint's `CustomAttributes`
(SageMaker Runtime API reference, InvokeEndpoint, Response Syntax: "an opaque value
that is forwarded verbatim"; no more than 1024 visible US-ASCII characters, RFC 7230
3.2.6 field-value components; the model's code sets it, else it is empty).

The value is `familiarity=<score>;familiar=<true|false>`: the score is the photo's
conformal p-value against the model's held-out photos (training_job/code/familiarity.py),
and `familiar` is that model's own verdict at the share it was calibrated for, so a
reader needs no threshold of its own. A version trained before familiarity existed sends
no attribute: its answers are "familiarity unknown", and the workflow treats them as it
did before.

Standard library only: packaged into the classify Lambda and the model's code/.
"""

from __future__ import annotations

import math

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
MAX_CUSTOM_ATTRIBUTES_LENGTH = 1024  # SageMaker's limit on the header's value
SCORE_KEY = "familiarity"
VERDICT_KEY = "familiar"
SCORE_DIGITS = 4


class FamiliarityAttributeError(ValueError):
    """Custom attributes that name a familiarity but do not say it in this format."""


def format_attributes(score: float, familiar: bool) -> str:
    """The custom attributes value for one answer, e.g. `familiarity=0.4257;familiar=true`."""
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise ValueError(f"a familiarity score is in [0, 1], got {score!r}")
    return f"{SCORE_KEY}={score:.{SCORE_DIGITS}f};{VERDICT_KEY}={'true' if familiar else 'false'}"


def parse_attributes(value: str | None) -> tuple[float, bool] | None:
    """(score, familiar) from an answer's custom attributes; None when they say nothing
    of familiarity (a model version without it). Other `key=value` pairs are ignored."""
    if not value:
        return None
    pairs = {}
    for part in value.split(";"):
        key, separator, text = part.strip().partition("=")
        if separator:
            pairs[key.strip()] = text.strip()
    if SCORE_KEY not in pairs and VERDICT_KEY not in pairs:
        return None
    try:
        score = float(pairs[SCORE_KEY])
        verdict = {"true": True, "false": False}[pairs[VERDICT_KEY]]
    except (KeyError, ValueError):
        raise FamiliarityAttributeError(
            f"custom attributes {value[:80]!r} do not say `{SCORE_KEY}=<0..1>;"
            f"{VERDICT_KEY}=<true|false>`"
        ) from None
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise FamiliarityAttributeError(f"familiarity {score!r} is not in [0, 1]")
    return score, verdict
