"""The review measures: Wilson intervals, per-version accounting, "neither", bad items."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contract.decisions import ANSWER_NEITHER, UNVERSIONED
from contract.review_quality import (
    ALL_VERSIONS,
    MODEL_CLASSES,
    describe,
    from_attribute_values,
    measure,
    model_label,
    wilson_interval,
)
from handlers.workflow_event import LABELS
from tests.decisions_table import Traffic, simulate

START = datetime(2026, 11, 20, tzinfo=UTC)


def test_model_classes_are_the_handlers_labels_in_order() -> None:
    assert MODEL_CLASSES == LABELS


def test_wilson_interval_matches_published_values() -> None:
    # Brown, Cai & DasGupta (2001): 95% Wilson interval for 0 of 10 is (0, 0.2775).
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=1e-4)
    # 95 of 100: (0.8882, 0.9785), as statsmodels' proportion_confint(method="wilson").
    low, high = wilson_interval(95, 100)
    assert (low, high) == (pytest.approx(0.88820, abs=1e-4), pytest.approx(0.97847, abs=1e-4))
    assert wilson_interval(100, 100)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(-1, 10)


def item(reason: str = "", answer: str = "", said: str = "bicycle", **more: object) -> dict:
    inferences = ["0.97", "0.03"] if said == "bicycle" else ["0.03", "0.97"]
    base = {"label": said, "inferences": inferences, "model_version": "3", "source": "model"}
    if reason:
        base["review_reason"] = reason
    if answer:
        base.update(answer=answer, source="person", label=answer)
    return {**base, **more}


def test_accuracy_past_the_gate_counts_audited_answers_only() -> None:
    items = [
        item(),  # routed, not audited
        item("audit", "bicycle"),
        item("audit", "motorcycle"),  # the model said bicycle: wrong
        item("audit", ANSWER_NEITHER),  # out of scope: wrong, counted apart
        item("audit"),  # not answered yet
        item("doubtful", "bicycle"),
        item("doubtful", "motorcycle", said="motorcycle"),
        item("doubtful", "bicycle", said="motorcycle"),
    ]
    measured = measure(items)["3"]
    assert measured.decisions == 8
    assert measured.doubtful == 3
    assert measured.doubtful_share == pytest.approx(3 / 8)
    assert measured.pending == 1
    accuracy = measured.accuracy_past_gate
    assert (accuracy.successes, accuracy.n, accuracy.neither) == (1, 3, 1)
    agreement = measured.doubtful_agreement
    assert (agreement.successes, agreement.n) == (2, 3)
    line = describe(measured)
    assert "accuracy past the gate 33.3%" in line and "1 'neither'" in line
    assert "agreement on doubtful photos 66.7%" in line


def test_the_models_answer_comes_from_inferences_when_a_person_set_the_label() -> None:
    # The person answered "motorcycle" and it became the label; the model had said bicycle.
    answered = item("audit", "motorcycle", said="bicycle")
    assert answered["label"] == "motorcycle"
    assert model_label(answered) == "bicycle"
    assert measure([answered])["3"].accuracy_past_gate.successes == 0


def test_an_answer_without_the_models_own_is_not_judged() -> None:
    lost = {"review_reason": "audit", "answer": "bicycle", "label": "bicycle", "source": "person"}
    measured = measure([lost])[UNVERSIONED]
    assert measured.unjudged == 1
    assert measured.accuracy_past_gate.n == 0
    assert "unknown" in describe(measured)


@pytest.mark.parametrize(
    "inferences",
    [None, [], ["0.5"], ["nan", "0.1"], ["x", "y"], "bicycle", [{"N": "1"}, None]],
)
def test_damaged_inferences_fall_back_to_the_models_label(inferences: object) -> None:
    damaged = {"label": "motorcycle", "source": "model", "inferences": inferences}
    assert model_label(damaged) == "motorcycle"
    assert model_label({**damaged, "source": "person"}) == ""


def test_hostile_items_are_counted_not_trusted() -> None:
    items: list[dict] = [
        {},  # nothing at all
        {"model_version": 7, "review_reason": ["audit"], "answer": {"S": "x"}},  # wrong types
        item("audit", "BICYCLE"),  # an answer the contract does not know: still waiting
        item("something-else", "bicycle"),
    ]
    measured = measure(items)
    assert measured[ALL_VERSIONS].decisions == 4
    assert measured[ALL_VERSIONS].accuracy_past_gate.n == 0
    assert measured[ALL_VERSIONS].pending == 1
    assert UNVERSIONED in measured


def test_versions_are_ordered_numerically_and_all_comes_last() -> None:
    items = [item(model_version=v) for v in ("10", "2", UNVERSIONED, "1")]
    assert list(measure(items)) == ["1", "2", "10", UNVERSIONED, ALL_VERSIONS]
    assert measure([]).keys() == {ALL_VERSIONS}


def test_simulated_traffic_measures_what_it_was_given() -> None:
    traffic = Traffic(
        "4", photos=4000, start=START, accuracy=0.9, doubtful_share=0.2, doubtful_agreement=0.6
    )
    measured = measure(simulate(traffic, seed=1))["4"]
    assert measured.doubtful_share == pytest.approx(0.2, abs=0.03)
    low, high = measured.accuracy_past_gate.interval or (0, 0)
    assert low < 0.9 < high
    assert measured.doubtful_agreement.value == pytest.approx(0.6, abs=0.05)


def test_wire_format_items_read_as_plain_values() -> None:
    wire = {
        "label": {"S": "bicycle"},
        "inferences": {"L": [{"N": "0.2"}, {"N": "0.8"}]},
        "confidence": {"N": "0.8"},
        "weird": "not an attribute value",
    }
    plain = from_attribute_values(wire)
    assert plain == {"label": "bicycle", "inferences": ["0.2", "0.8"]}
    assert model_label(plain) == "motorcycle"


def test_unfamiliar_photos_are_counted_and_a_persons_neither_confirms_them() -> None:
    """Issue 23: the share the familiarity check stops, and how often a person agrees the
    photo is neither (a bicycle it stopped counts against it); not accuracy past the gate."""
    items = [
        item(),
        item("unfamiliar", ANSWER_NEITHER),
        item("unfamiliar", ANSWER_NEITHER),
        item("unfamiliar", "bicycle"),
        item("unfamiliar"),
    ]
    measured = measure(items)["3"]
    assert measured.unfamiliar == 4
    assert measured.unfamiliar_share == pytest.approx(4 / 5)
    assert measured.pending == 1
    confirmed = measured.unfamiliar_confirmed
    assert (confirmed.successes, confirmed.n, confirmed.neither) == (2, 3, 2)
    assert measured.accuracy_past_gate.n == 0 and measured.doubtful_agreement.n == 0
    assert measured.as_dict()["unfamiliar_confirmed"]["value"] == pytest.approx(2 / 3)
    line = describe(measured)
    assert "unfamiliar share 80.0% (4/5 decisions)" in line
    assert "called 'neither' 66.7% (2/3)" in line
