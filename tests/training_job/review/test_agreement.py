"""A reviewer's mistake must not silently teach the model (issue 23, item 5): an answer
that contradicts a confident model waits for a second reviewer, and becomes training data
only when the two agree (training_job/review/agreement.py, store.py); the simulated
reviewer who errs (training_job/review/scripted.py)."""

from __future__ import annotations

import pytest

from contract.decisions import (
    REVIEWED_MANIFEST_KEY,
    SOURCE_MODEL,
    SOURCE_PERSON,
    STATUS_NEEDS_REVIEW,
    STATUS_REVIEWED,
    photo_location,
)
from contract.manifest import LstEntry, parse_lst
from tests.training_job.review.conftest import ReviewWorld, seed_item
from training_job.review.agreement import (
    SECOND_OPINION_BELOW,
    contradicts_model,
    training_answer,
)
from training_job.review.reviewed import reviewed_filename
from training_job.review.scripted import SimulatedPerson, review_queue
from training_job.review.server import ReviewServer
from training_job.review.store import Conflict

CONFIDENT = 0.95  # the model's probability for its best class on the photo


def manifest_lines(world: ReviewWorld) -> list[LstEntry]:
    try:
        body = world.s3.get_object(Bucket=world.bucket, Key=REVIEWED_MANIFEST_KEY)["Body"]
    except world.s3.exceptions.NoSuchKey:
        return []
    return parse_lst(body.read().decode())


def confident_bicycle(world: ReviewWorld, index: int = 0) -> str:
    """Photo `index` queued with the model 95% sure it is a bicycle; its id."""
    photo = world.photos[index]
    seed_item(world, photo, f"2026-11-29T10:00:{index:02d}.000Z", confidence=CONFIDENT)
    return photo.image


def test_which_answers_contradict_the_model_strongly() -> None:
    assert contradicts_model([CONFIDENT, 1 - CONFIDENT], "motorcycle")
    assert not contradicts_model([CONFIDENT, 1 - CONFIDENT], "bicycle")
    # A doubtful photo's answer is taken at once, either way.
    assert not contradicts_model([0.62, 0.38], "motorcycle")
    assert not contradicts_model([1 - SECOND_OPINION_BELOW, SECOND_OPINION_BELOW], "motorcycle")
    # "neither" names no class: never training data, never held.
    assert not contradicts_model([CONFIDENT, 1 - CONFIDENT], "neither")
    assert not contradicts_model([], "motorcycle")  # no model distribution to contradict
    assert training_answer("motorcycle", None) == "motorcycle"
    assert training_answer("motorcycle", "motorcycle") == "motorcycle"
    assert training_answer("motorcycle", "bicycle") is None


def test_an_answer_against_a_confident_model_waits_for_a_second_reviewer(
    world: ReviewWorld,
) -> None:
    """The hold is one conditional UpdateItem (`attribute_not_exists(first_answer)` and the
    revision seen): DynamoDB developer guide, "Condition expressions": a conditional write
    succeeds only if its condition is true, else ConditionalCheckFailedException and the
    item is unchanged, so of two first answers at once one holds and the other conflicts."""
    store = world.store()
    image = confident_bicycle(world)

    held = store.answer(image, "motorcycle", 0, "alice")

    assert held == world.item(image)
    assert (held["first_answer"], held["first_reviewer"]) == ("motorcycle", "alice")
    assert held["status"] == STATUS_NEEDS_REVIEW and held["source"] == SOURCE_MODEL
    assert held["label"] == "bicycle" and "answer" not in held
    assert held["review_pending"] == "pending"
    assert world.events() == [] and manifest_lines(world) == []
    # Not alice's to decide: she is shown the next photo, and refused if she insists.
    assert store.next_pending(reviewer="alice")["image"] == world.photos[1].image  # type: ignore[index]
    assert store.next_pending(reviewer="bob")["image"] == image  # type: ignore[index]
    with pytest.raises(Conflict, match="another reviewer decides it"):
        store.answer(image, "motorcycle", held["revision"], "alice")

    decided = store.answer(image, "motorcycle", held["revision"], "bob")

    assert decided["status"] == STATUS_REVIEWED and decided["source"] == SOURCE_PERSON
    assert (decided["label"], decided["reviewer"]) == ("motorcycle", "bob")
    assert "review_pending" not in decided
    [event] = world.events()
    assert (event["detail"]["label"], event["detail"]["source"]) == ("motorcycle", SOURCE_PERSON)
    assert manifest_lines(world) == [LstEntry(0, 1, reviewed_filename(image))]


def test_two_reviewers_who_disagree_decide_the_label_and_teach_nothing(
    world: ReviewWorld,
) -> None:
    store = world.store()
    image = confident_bicycle(world)
    held = store.answer(image, "motorcycle", 0, "alice")

    decided = store.answer(image, "bicycle", held["revision"], "bob")

    assert (decided["label"], decided["source"]) == ("bicycle", SOURCE_PERSON)
    assert [event["detail"]["label"] for event in world.events()] == ["bicycle"]
    assert manifest_lines(world) == []


def test_a_reviewer_who_errs_on_a_twentieth_of_answers_is_checked_by_a_second(
    world: ReviewWorld, review_server: ReviewServer
) -> None:
    """The scripted reviewer through the page's API: the photo the model is sure of and
    the reviewer gets wrong stays queued for someone else, and nothing learns from it."""
    image = confident_bicycle(world)
    truth = {photo_location(photo.image): photo.truth for photo in world.photos}
    truth[photo_location(image)] = "bicycle"
    wrong_first = next(seed for seed in range(1000) if _errs_first(seed))

    result = review_queue(review_server.url, truth, SimulatedPerson(0.05, wrong_first))

    assert result.pending_after == 1  # the held photo, for a second reviewer
    assert world.item(image)["first_answer"] == "motorcycle"
    assert reviewed_filename(image) not in {entry.filename for entry in manifest_lines(world)}


def _errs_first(seed: int) -> bool:
    return SimulatedPerson(0.05, seed).answer("bicycle") == "motorcycle"


def test_the_simulated_reviewer_errs_on_its_rate_and_repeats_its_mistakes() -> None:
    truths = ["bicycle", "motorcycle"] * 2000
    person = SimulatedPerson(0.05, seed=7)
    answers = [person.answer(truth) for truth in truths]
    wrong = sum(answer != truth for answer, truth in zip(answers, truths, strict=True))
    assert 150 <= wrong <= 250  # 5% of 4,000 is 200; a binomial's 3.5 sigma is +-48
    again = SimulatedPerson(0.05, seed=7)
    assert [again.answer(truth) for truth in truths] == answers
    assert all(SimulatedPerson(0.5, seed).answer("neither") == "neither" for seed in range(50))
    assert [SimulatedPerson(0.0, 1).answer(truth) for truth in truths] == truths
    with pytest.raises(ValueError, match="error_rate"):
        SimulatedPerson(1.0)
