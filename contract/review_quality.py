"""What people's answers say about the model: the review measures, per model version.

One implementation for the scheduled Lambda (handlers/review_monitor.py) and `python -m
training_job monitor review` / `monitor report`: both hand it decision items as the
decisions table holds them (contract/decisions.py), plain Python values.

- Accuracy past the gate: of the photos that passed the threshold and were sampled for
  audit (review_reason "audit": an unbiased sample of what the routing system received),
  the share a person confirmed (answer == label), with a Wilson 95% interval and n.
- The doubtful share: of all the version's decisions, the share stopped at the gate
  (review_reason "doubtful").
- Agreement on doubtful photos: of the doubtful photos a person answered, the share where
  the answer is the model's best class.

- The unfamiliar share: of all the version's decisions, the share the model called
  unfamiliar (review_reason "unfamiliar", contract/familiarity.py), and of those a person
  answered, the share they confirmed as "neither" (`unfamiliar_confirmed`): how often the
  familiarity check stops a real bicycle or motorcycle.

"neither" (the photo is no bicycle and no motorcycle) is counted as the model being wrong,
in both accuracy and agreement: the model gave it one of the two labels, and past the gate
the routing system acted on that label. It is also counted apart (`neither`) so a reader
can tell out-of-scope photos from confusions between the two classes.

Standard library only: packaged into the Lambda.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from contract.decisions import (
    ANSWER_NEITHER,
    ANSWERS,
    REASON_AUDIT,
    REASON_DOUBTFUL,
    REASON_UNFAMILIAR,
    SOURCE_PERSON,
    UNVERSIONED,
)

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
ALL_VERSIONS = "all"
# The fewest audited answers accuracy past the gate is alarmed on: below it the interval is
# too wide to mean anything (at 50 answers and 95% accuracy, Wilson's is about 87-98%).
MIN_AUDIT_SAMPLE = 50
# The model's classes in LABELS order (handlers/workflow_event.py; a test holds them equal),
# the order of an item's `inferences`.
MODEL_CLASSES = tuple(answer for answer in ANSWERS if answer != ANSWER_NEITHER)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (good at small n and near 1,
    where the normal approximation's interval leaves [0, 1]). (0, 1) when trials is 0."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be 0 to {trials}, got {successes}")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Proportion:
    """successes of n, with its Wilson 95% interval; None values when n is 0."""

    successes: int = 0
    n: int = 0
    neither: int = 0  # answers "neither" among the n (counted as failures)

    @property
    def value(self) -> float | None:
        return self.successes / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.successes, self.n) if self.n else None

    def as_dict(self) -> dict[str, Any]:
        low, high = self.interval or (None, None)
        return {
            "value": self.value,
            "low": low,
            "high": high,
            "successes": self.successes,
            "n": self.n,
            "neither": self.neither,
        }


@dataclass
class VersionMeasures:
    """The review measures of one model version (or of all of them, ALL_VERSIONS)."""

    model_version: str
    decisions: int = 0  # every decision counted (doubtful share's denominator)
    doubtful: int = 0
    audited: int = 0  # sampled for audit, answered or not
    pending: int = 0  # queued and not answered yet
    unjudged: int = 0  # answered, without the model's own answer on the item
    accuracy_past_gate: Proportion = field(default_factory=Proportion)
    doubtful_agreement: Proportion = field(default_factory=Proportion)
    unfamiliar: int = 0
    # Of the unfamiliar photos answered, those a person called "neither" (successes).
    unfamiliar_confirmed: Proportion = field(default_factory=Proportion)

    @property
    def doubtful_share(self) -> float | None:
        return self.doubtful / self.decisions if self.decisions else None

    @property
    def unfamiliar_share(self) -> float | None:
        return self.unfamiliar / self.decisions if self.decisions else None

    def as_dict(self) -> dict[str, Any]:
        measures = asdict(self)
        measures["doubtful_share"] = self.doubtful_share
        measures["unfamiliar_share"] = self.unfamiliar_share
        measures["accuracy_past_gate"] = self.accuracy_past_gate.as_dict()
        measures["doubtful_agreement"] = self.doubtful_agreement.as_dict()
        measures["unfamiliar_confirmed"] = self.unfamiliar_confirmed.as_dict()
        return measures


def _text(item: Mapping[str, Any], name: str) -> str:
    value = item.get(name)
    return value if isinstance(value, str) else ""


def model_label(item: Mapping[str, Any]) -> str:
    """What the model said: the best class of `inferences`, which no answer changes (a
    person's answer may become `label`, with `source` "person"); `label` when the item
    has no usable inferences and the model set it last; "" when that cannot be told."""
    inferences = item.get("inferences")
    if isinstance(inferences, list | tuple) and len(inferences) == len(MODEL_CLASSES):
        try:
            values = [float(value) for value in inferences]
        except (TypeError, ValueError):
            values = []
        if values and all(math.isfinite(v) for v in values):
            return MODEL_CLASSES[max(range(len(values)), key=values.__getitem__)]
    if _text(item, "source") == SOURCE_PERSON:
        return ""
    return _text(item, "label")


def _add(measures: VersionMeasures, item: Mapping[str, Any]) -> None:
    reason = _text(item, "review_reason")
    answer = _text(item, "answer")
    label = model_label(item)
    measures.decisions += 1
    measures.doubtful += reason == REASON_DOUBTFUL
    measures.audited += reason == REASON_AUDIT
    measures.unfamiliar += reason == REASON_UNFAMILIAR
    if reason not in (REASON_AUDIT, REASON_DOUBTFUL, REASON_UNFAMILIAR):
        return
    if answer not in ANSWERS:  # not answered yet (or an answer this contract does not know)
        measures.pending += 1
        return
    if reason == REASON_UNFAMILIAR:  # judged by "neither", not by the model's label
        measures.unfamiliar_confirmed.n += 1
        measures.unfamiliar_confirmed.successes += answer == ANSWER_NEITHER
        measures.unfamiliar_confirmed.neither += answer == ANSWER_NEITHER
        return
    if not label:  # answered, but what the model said is lost: it cannot be judged
        measures.unjudged += 1
        return
    proportion = (
        measures.accuracy_past_gate if reason == REASON_AUDIT else measures.doubtful_agreement
    )
    proportion.n += 1
    proportion.successes += answer == label
    proportion.neither += answer == ANSWER_NEITHER


def measure(items: Iterable[Mapping[str, Any]]) -> dict[str, VersionMeasures]:
    """The measures per model version, and over every version (key ALL_VERSIONS), of
    decision items with (at least) label, model_version, review_reason and answer.

    An item's `model_version` missing or empty counts as UNVERSIONED. Items given only
    from the answered index (the Lambda) make `decisions` count answered items only: the
    doubtful share is then meaningless and the caller does not report it."""
    by_version: dict[str, VersionMeasures] = {}
    overall = VersionMeasures(ALL_VERSIONS)
    for item in items:
        version = _text(item, "model_version") or UNVERSIONED
        _add(by_version.setdefault(version, VersionMeasures(version)), item)
        _add(overall, item)
    ordered = dict(sorted(by_version.items(), key=lambda pair: _version_order(pair[0])))
    return {**ordered, ALL_VERSIONS: overall}


def _version_order(version: str) -> tuple[int, int, str]:
    """Numbered versions in numeric order ("2" before "10"), others after, by name."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def describe(measures: VersionMeasures) -> str:
    """One line a person reads: accuracy past the gate with its interval, and the rest."""
    parts = []
    accuracy = measures.accuracy_past_gate
    if accuracy.n:
        low, high = accuracy.interval or (0.0, 1.0)
        parts.append(
            f"accuracy past the gate {accuracy.value:.1%} (95% CI {low:.1%}-{high:.1%}, "
            f"{accuracy.successes}/{accuracy.n} audited answers"
            + (f", {accuracy.neither} 'neither'" if accuracy.neither else "")
            + ")"
        )
    else:
        parts.append("accuracy past the gate unknown (no audited answer yet)")
    if measures.doubtful_share is not None:
        parts.append(
            f"doubtful share {measures.doubtful_share:.1%} "
            f"({measures.doubtful}/{measures.decisions} decisions)"
        )
    agreement = measures.doubtful_agreement
    if agreement.n:
        parts.append(
            f"model-person agreement on doubtful photos {agreement.value:.1%} "
            f"({agreement.successes}/{agreement.n})"
        )
    if measures.unfamiliar_share is not None and measures.unfamiliar:
        parts.append(
            f"unfamiliar share {measures.unfamiliar_share:.1%} "
            f"({measures.unfamiliar}/{measures.decisions} decisions)"
        )
    confirmed = measures.unfamiliar_confirmed
    if confirmed.n:
        parts.append(
            f"unfamiliar photos a person called 'neither' {confirmed.value:.1%} "
            f"({confirmed.successes}/{confirmed.n})"
        )
    if measures.pending:
        parts.append(f"{measures.pending} waiting for a person")
    return "; ".join(parts)


def from_attribute_values(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item in DynamoDB's wire format ({"label": {"S": ...}}, what a low-level client's
    Query and Scan return) as the plain values the measures read: strings, and lists of
    numbers (`inferences`) as lists of strings, which `model_label` reads as floats.
    Attributes of other types are left out."""
    plain: dict[str, Any] = {}
    for name, value in item.items():
        if not isinstance(value, dict):
            continue
        if isinstance(value.get("S"), str):
            plain[name] = value["S"]
        elif isinstance(value.get("L"), list):
            plain[name] = [v.get("N") for v in value["L"] if isinstance(v, dict)]
    return plain
