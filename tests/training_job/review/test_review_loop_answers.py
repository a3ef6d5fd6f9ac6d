"""The review-loop benchmark's erring reviewer (benchmarks/review_loop.py): the answers
it trains the `erring` and `checked` models on, through the store's own agreement rule."""

from __future__ import annotations

import numpy as np

from benchmarks import review_loop
from contract.manifest import LstEntry
from training_job.review.scripted import SimulatedPerson

CONFIDENT_RIGHT = [0.95, 0.05]  # the model 95% sure of bicycle, the truth


def photos(count: int) -> list[review_loop.Photo]:
    return [review_loop.Photo(LstEntry(n, 0, f"{n}.png"), b"") for n in range(count)]


def test_a_perfect_reviewer_teaches_exactly_the_truth() -> None:
    reviewed = photos(20)
    probs = np.array([CONFIDENT_RIGHT] * 20)
    erring, checked, counts = review_loop.answered_by_erring_reviewer(reviewed, probs, 0.0, 0)
    assert erring == checked == reviewed
    assert counts["wrong_answers"] == 0
    assert all(counts[f"second_opinions@{level}"] == 0 for level in (0.5, 0.3, 0.2, 0.1))


def test_a_wrong_answer_against_a_confident_model_is_not_learned() -> None:
    """Every answer the first reviewer gets wrong contradicts the model (95% on the truth):
    each gets a second opinion, and only answers two people agree on become lines."""
    reviewed = photos(400)
    probs = np.array([CONFIDENT_RIGHT] * 400)
    seed = 3
    erring, checked, counts = review_loop.answered_by_erring_reviewer(reviewed, probs, 0.05, seed)

    first = SimulatedPerson(0.05, seed)
    expected_wrong = sum(first.answer("bicycle") != "bicycle" for _ in reviewed)
    assert counts["wrong_answers"] == expected_wrong > 0
    assert sum(photo.entry.label != 0 for photo in erring) == expected_wrong
    assert counts["second_opinions@0.2"] == expected_wrong
    # Both people wrong on the same photo is the only way a wrong line stays: rare.
    assert counts["wrong_lines@0.2"] == sum(photo.entry.label != 0 for photo in checked) <= 1
    assert len(checked) == len(reviewed) - counts["held_back@0.2"]
