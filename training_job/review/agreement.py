"""When a person's answer may teach the model: it agrees with the model, or two people agree.

A reviewer who answers wrongly on a few photos must not silently teach the model those
mistakes (issue 23, item 5). People err rarely and independently; a confident model that
the person contradicts is the sign worth a second look. So an answer naming a class the
model gave less than SECOND_OPINION_BELOW (the model put at least 1 - that on another
class) is held: the photo stays in the queue for a second, different reviewer, and the
first answer changes nothing yet (no label, no event, no training line). The second
answer decides the photo's label (with two classes it is the majority of the model and
the two people); it becomes training data only when the two people agree. Answers the
model does not contradict strongly, and "neither" (no class, never training data), are
taken at once.

benchmarks/review_loop.py measures it with a simulated reviewer who errs on 5% of answers
(docs/benchmarks-history.md, "Review loop again").
"""

from __future__ import annotations

from collections.abc import Sequence

from contract.review_quality import MODEL_CLASSES

# The model's probability for the answered class below which a second person is asked:
# the model put 0.8 or more on another class ("disagree strongly"). On the review-loop
# stream (docs/benchmarks.md) this asks one answer in ten for a second opinion and keeps
# 11 of 25 wrong answers out of training; 0.5 would ask one in four and keep out 21.
SECOND_OPINION_BELOW = 0.2


def contradicts_model(
    inferences: Sequence[float], answer: str, below: float = SECOND_OPINION_BELOW
) -> bool:
    """Whether `answer` names a class the model (its `inferences`, in MODEL_CLASSES
    order) gave less than `below`: the answer needs a second person."""
    if answer not in MODEL_CLASSES or len(inferences) != len(MODEL_CLASSES):
        return False
    return float(inferences[MODEL_CLASSES.index(answer)]) < below


def training_answer(first: str, second: str | None) -> str | None:
    """The answer a photo teaches the model: the first when no second was needed, the
    agreed one when two people agree, none when they disagree."""
    if second is None or second == first:
        return first
    return None
