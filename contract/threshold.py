"""The workflow's confidence threshold: its one default, and the one reading of its setting.

The threshold filter stops an inference whose best probability is below the threshold;
the scheduled monitor counts the share of captured traffic below the same value, and the
model's baseline profile records the value it was profiled with. serverless.yml passes
one `${param:threshold}` to both Lambdas as THRESHOLD (its default there is pinned to
DEFAULT_THRESHOLD by tests/contract/test_threshold.py), so `--param threshold=0.9` moves
the filter and the monitor together.

Standard library only: it is packaged into the filter's and the monitor's Lambdas and
copied into the SageMaker code directory, where the baseline profile is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

DEFAULT_THRESHOLD = 0.93
ENVIRONMENT_VARIABLE = "THRESHOLD"


class ThresholdError(ValueError):
    """A threshold setting that is not a number in (0, 1]."""


def parse_threshold(raw: str) -> float:
    """`raw` as a threshold: a finite number above 0 and at most 1 (1 passes only certainty)."""
    try:
        threshold = float(raw)
    except ValueError:
        raise ThresholdError(f"{ENVIRONMENT_VARIABLE} must be a number, got {raw[:40]!r}") from None
    if not (math.isfinite(threshold) and 0.0 < threshold <= 1.0):
        raise ThresholdError(f"{ENVIRONMENT_VARIABLE} must be in (0, 1], got {raw[:40]!r}")
    return threshold


def threshold_from_environment(environ: Mapping[str, str]) -> float:
    """THRESHOLD from `environ`, or DEFAULT_THRESHOLD when it is unset or blank."""
    raw = environ.get(ENVIRONMENT_VARIABLE, "").strip()
    return parse_threshold(raw) if raw else DEFAULT_THRESHOLD
