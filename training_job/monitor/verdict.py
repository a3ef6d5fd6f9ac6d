"""The report's first lines: what changed, since when, how sure, in plain words."""

from __future__ import annotations

from contract.review_quality import ALL_VERSIONS, VersionMeasures
from training_job.monitor.analysis import WindowResult, window_span
from training_job.monitor.drift_monitor import ANSWER_DRIFT, DETECTORS, INPUT_DRIFT


def _tests(results: list[WindowResult], detectors: frozenset[str], shown: int = 4) -> str:
    """The alerting tests of `detectors`, the strongest (smallest adjusted p) first."""
    strongest: dict[str, float] = {}
    for f in (f for r in results for f in r.findings if f.alert and f.detector in detectors):
        name = f.test.replace("_", " ")
        strongest[name] = min(strongest.get(name, 1.0), f.p_adjusted)
    names = sorted(strongest, key=strongest.__getitem__)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more if names else "?"


def verdict(
    results: list[WindowResult], alpha: float, review: dict[str, VersionMeasures] | None = None
) -> list[str]:
    """The report's first lines, in plain words: what changed, since when, how sure; and
    what people's answers say, when the decisions table was read."""
    judged = [r for r in results if r.findings]
    sentences = []
    if not judged:
        sentences.append(
            f"No verdict: none of the {len(results)} windows held enough usable records to "
            "compare with the baseline."
        )
    else:
        alerting = [r for r in judged if r.alert]
        answer_detectors = DETECTORS.names(ANSWER_DRIFT)
        input_detectors = DETECTORS.names(INPUT_DRIFT)
        answers = [r for r in alerting if r.drift == ANSWER_DRIFT]
        if alerting:
            first = answers[0] if answers else alerting[0]
            since = [r for r in judged if r.index >= first.index]
            every = all(r.alert for r in since)
            if answers:
                what = (
                    "The model's answers changed ("
                    + _tests(answers, answer_detectors)
                    + ")"
                    + (
                        ", and so did the photos (" + _tests(answers, input_detectors) + ")"
                        if any(
                            f.alert and f.detector in input_detectors
                            for r in answers
                            for f in r.findings
                        )
                        else ", the photos did not"
                    )
                )
            else:
                what = (
                    "The photos changed (" + _tests(alerting, input_detectors) + ") but the "
                    "model's answers did not"
                )
            sentences.append(
                f"{what}: since the window {window_span(first)}, "
                + (
                    f"in every one of the {len(since)} windows since."
                    if every
                    else f"in {sum(r.alert for r in since)} of the {len(since)} windows since."
                )
            )
            strongest = min(f.p_adjusted for f in first.findings if f.alert)
            sentences.append(
                f"How sure: {len(alerting)} of {len(judged)} windows alerted; a window's tests "
                f"together alarm falsely at most {alpha:.0%} of the time (Holm-corrected), so "
                f"chance explains about {alpha * len(judged):.2g} alerting windows of "
                f"{len(judged)}; in the first, the strongest test's adjusted p = {strongest:.2g}."
            )
        else:
            smallest = min(f.p_adjusted for r in judged for f in r.findings)
            sentences.append(
                f"No drift: none of the {len(judged)} windows from {window_span(judged[0])} "
                f"to {window_span(judged[-1])} differs from the baseline "
                f"(smallest Holm-adjusted p = {smallest:.2g}, alert at {alpha})."
            )
    if review is not None:
        audited = [
            (version, m.accuracy_past_gate)
            for version, m in review.items()
            if version != ALL_VERSIONS and m.accuracy_past_gate.n
        ]
        if audited:
            sentences.append(
                "People's answers: accuracy past the gate "
                + "; ".join(
                    f"{a.value:.1%} for model version {version} (95% CI "
                    f"{(a.interval or (0, 1))[0]:.1%} to {(a.interval or (0, 1))[1]:.1%}, "
                    f"{a.n} audited photos)"
                    for version, a in audited
                )
                + "."
            )
        else:
            sentences.append("People's answers: no audited photo has been answered yet.")
    return sentences
