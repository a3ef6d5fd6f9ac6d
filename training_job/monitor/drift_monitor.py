"""The registry of drift detectors, and the monitor that runs them on each window.

Every detector is registered in DETECTORS with its kind (detectors.py: INPUT, EMBEDDING,
ANSWERS): what it watches, which says what its alert means. `DriftMonitor` runs every
registered detector and corrects the p-values of a window together with Holm's
step-down method, which bounds the chance of any false alarm in a window by `alpha`
whatever the dependence between the tests. `drift_kind` names what moved from the kinds
of the alerting detectors: the inputs only (input and embedding kinds: the model is
seeing something new but answers as before, worth a log line) or the model's answers
(worth a page). `monitor check`'s exit code and metrics and the report read the same
registry, so a detector registered there counts everywhere (docs/how-to-extend.md, "How
to add a drift detector").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from training_job.monitor.baseline import Baseline
from training_job.monitor.detectors import (
    ANSWERS,
    EMBEDDING,
    INPUT,
    ClassMixDetector,
    ConfidenceDetector,
    Detector,
    EmbeddingDetector,
    Finding,
    InputStatisticsDetector,
    LowConfidenceDetector,
    Window,
)

NO_DRIFT, INPUT_DRIFT, ANSWER_DRIFT = "none", "input", "answers"
# The inputs (what reaches the endpoint) and the model's embedding of them (what it sees)
# moving is input drift: the workflow still does what it did with the images.
DRIFT_OF_KIND = {INPUT: INPUT_DRIFT, EMBEDDING: INPUT_DRIFT, ANSWERS: ANSWER_DRIFT}


class DetectorRegistrationError(ValueError):
    """A detector the registry refuses: no name, no kind or an unknown one, registered
    twice, or a name another kind already uses."""


@dataclass(frozen=True)
class RegisteredDetector:
    detector: type
    name: str
    kind: str
    build: Callable[[DriftMonitor], Detector]  # an unfitted detector, from the settings


class DetectorRegistry:
    """The drift detectors every monitor runs, each with its kind. `DriftMonitor`,
    `drift_kind`, `monitor check`'s exit code and metrics and the report all read it."""

    def __init__(self) -> None:
        self._entries: list[RegisteredDetector] = []

    def register(
        self, detector: type, build: Callable[[DriftMonitor], Detector] | None = None
    ) -> RegisteredDetector:
        """Run `detector` in every monitor from now on; `build` makes one from the monitor's
        settings (default: `detector()`)."""
        label = getattr(detector, "__name__", repr(detector))
        name, kind = getattr(detector, "name", None), getattr(detector, "kind", None)
        if not isinstance(name, str) or not name:
            raise DetectorRegistrationError(
                f"{label} has no name: set `name`, the `detector` of its findings"
            )
        if kind not in DRIFT_OF_KIND:
            raise DetectorRegistrationError(
                f"{label} declares no known kind ({kind!r}): set `kind` to one of "
                f"{', '.join(DRIFT_OF_KIND)}, which says whether its alert means the inputs "
                "or the model's answers moved"
            )
        for entry in self._entries:
            if entry.detector is detector:
                raise DetectorRegistrationError(f"{label} is registered already")
            if entry.name == name and entry.kind != kind:
                raise DetectorRegistrationError(
                    f"{label}: the name {name!r} is {entry.detector.__name__}'s, of kind "
                    f"{entry.kind}; a name has one kind"
                )
        entry = RegisteredDetector(detector, name, kind, build or (lambda monitor: detector()))
        self._entries.append(entry)
        return entry

    def unregister(self, entry: RegisteredDetector) -> None:
        self._entries.remove(entry)

    def __iter__(self) -> Iterator[RegisteredDetector]:
        return iter(list(self._entries))

    def names(self, drift: str) -> frozenset[str]:
        """The names of the detectors whose alerts mean `drift` (INPUT_DRIFT or ANSWER_DRIFT)."""
        return frozenset(e.name for e in self._entries if DRIFT_OF_KIND[e.kind] == drift)


DETECTORS = DetectorRegistry()
DETECTORS.register(InputStatisticsDetector)
DETECTORS.register(
    EmbeddingDetector,
    lambda monitor: EmbeddingDetector(
        monitor.permutations, monitor.seed, dimensions=monitor.embedding_dimensions
    ),
)
DETECTORS.register(ClassMixDetector)
DETECTORS.register(ConfidenceDetector)
DETECTORS.register(LowConfidenceDetector)


def drift_kind(findings: list[Finding]) -> str:
    """NO_DRIFT, INPUT_DRIFT (inputs moved, answers did not) or ANSWER_DRIFT."""
    alerting = {f.detector for f in findings if f.alert}
    if alerting & DETECTORS.names(ANSWER_DRIFT):
        return ANSWER_DRIFT
    if alerting & DETECTORS.names(INPUT_DRIFT):
        return INPUT_DRIFT
    return NO_DRIFT


def describe_drift(findings: list[Finding]) -> str:
    """The verdict in words, for the report and `monitor check`."""
    kind = drift_kind(findings)
    if kind == NO_DRIFT:
        return "no drift"
    if kind == INPUT_DRIFT:
        return "input drift, model answers unchanged"
    inputs = DETECTORS.names(INPUT_DRIFT)
    moved = any(f.alert and f.detector in inputs for f in findings)
    return "model answers moved, " + ("inputs moved too" if moved else "inputs unchanged")


def holm(findings: list[Finding], alpha: float) -> list[Finding]:
    """Holm's step-down adjusted p-values; alert where the adjusted p-value <= alpha."""
    order = sorted(range(len(findings)), key=lambda i: findings[i].p_value)
    running = 0.0
    for rank, index in enumerate(order):
        adjusted = min(1.0, (len(findings) - rank) * findings[index].p_value)
        running = max(running, adjusted)  # adjusted p-values never decrease down the list
        findings[index].p_adjusted = running
        findings[index].threshold = alpha
        findings[index].alert = running <= alpha
    return findings


@dataclass
class DriftMonitor:
    """Every registered detector (in registration order), fitted on one baseline, with one
    family-wise error rate per window."""

    alpha: float = 0.01
    permutations: int = 10_000
    seed: int = 0
    embedding_dimensions: int | None = None
    detectors: list[Any] = field(default_factory=list)

    def fit(self, baseline: Baseline) -> DriftMonitor:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        self.detectors = [entry.build(self).fit(baseline) for entry in DETECTORS]
        return self

    def test(self, window: Window) -> list[Finding]:
        findings = [finding for d in self.detectors for finding in d.test(window)]
        return holm(findings, self.alpha)
