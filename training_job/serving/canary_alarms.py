"""The canary's alarms on the answers themselves: doubtful share, confidence and class mix.

Errors and latency say a version answers; these say what it answers. Each is an alarm on
one of the new variant's answer metrics (contract/variant_metrics.py: one value per
answer, so a period's Average is its share or mean), set outside a band around the
reference, in both directions where the band leaves room:

- doubtful share above the lower of the two baselines' shares plus --doubtful-margin (a
  version that doubts more than production did, even if its own profile says it would),
  and below the serving version's share minus the margin (a version that stopped
  doubting: one that answers [1.0, 0.0] to everything);
- mean confidence below or above the serving version's by --confidence-margin;
- each class's share above the serving version's by --class-share-margin. Every answer
  names one class, so a class falling is another rising: with two classes, the two
  alarms watch the mix in both directions.

The reference is the serving version's baseline profile (what production answered on
its validation images); without it, the new version's own profile, with a warning: a
version's own profile shares its faults (a constant model profiles as constant). A band
edge outside [0, 1] cannot be crossed, so that alarm is not made. AWS allows at most 10
alarms in a deployment's AutoRollbackConfiguration; with the two service alarms these
are at most 4 + the number of classes (8 for this model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contract import variant_metrics
from contract.baseline import BaselineDocument


@dataclass(frozen=True)
class Margins:
    doubtful: float
    confidence: float
    class_share: float


@dataclass(frozen=True)
class Reference:
    """What a version answered on its validation images, as the answer metrics read it."""

    source: str  # e.g. "the serving version's baseline"
    doubtful_share: float
    confidence: float
    class_share: dict[str, float]

    @classmethod
    def of(cls, profile: BaselineDocument, source: str) -> Reference:
        count = max(1, len(profile.confidences))
        below = sum(1 for value in profile.confidences if value < profile.threshold)
        return cls(
            source,
            below / count,
            sum(profile.confidences) / count,
            profile.class_share if profile.count else {},
        )


def answer_alarms(
    prefix: str, variant: str, serving: Reference | None, new: Reference | None, margins: Margins
) -> list[dict[str, Any]]:
    """PutMetricAlarm arguments (without the common Dimensions, Period and the like) of
    every answer alarm the references allow; none when there is no reference at all."""
    main = serving or new
    if main is None:
        return []
    alarms: list[dict[str, Any]] = []

    def add(name: str, metric: str, what: str, reference: Reference, value: float,
            change: float) -> None:  # fmt: skip
        limit = value + change
        if not 0.0 < limit < 1.0:
            return  # a share or a probability never crosses it
        above = change > 0
        alarms.append(
            {
                "AlarmName": f"{prefix}-{name}",
                "AlarmDescription": f"{variant}'s {what} is {'over' if above else 'under'} "
                f"{limit:.3f} ({reference.source}: {value:.3f})",
                "Namespace": variant_metrics.ENDPOINT_NAMESPACE,
                "MetricName": metric,
                "Statistic": "Average",
                "Threshold": round(limit, 6),
                "ComparisonOperator": "GreaterThanThreshold" if above else "LessThanThreshold",
            }
        )

    lowest = min((ref for ref in (serving, new) if ref), key=lambda ref: ref.doubtful_share)
    doubtful, confidence = variant_metrics.DOUBTFUL_SHARE, variant_metrics.CONFIDENCE
    add("doubtful-share", doubtful, "doubtful share", lowest, lowest.doubtful_share,
        margins.doubtful)  # fmt: skip
    add("doubtful-share-low", doubtful, "doubtful share", main, main.doubtful_share,
        -margins.doubtful)  # fmt: skip
    add("confidence-low", confidence, "mean confidence", main, main.confidence,
        -margins.confidence)  # fmt: skip
    add("confidence-high", confidence, "mean confidence", main, main.confidence,
        margins.confidence)  # fmt: skip
    for label, share in main.class_share.items():
        add(f"class-{label}-share", variant_metrics.class_share(label),
            f"share of {label} answers", main, share, margins.class_share)  # fmt: skip
    return alarms
