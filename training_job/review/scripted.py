"""A scripted reviewer: answers the queue through the review page's own HTTP API.

The demo has no person at the keyboard; this stands in for one, with the true labels,
and goes through exactly the requests the page makes (GET /api/next, POST /api/answer,
skipping a photo it has no label for), so the demo exercises the same path. A
`SimulatedPerson` with an error rate answers wrongly on that share of photos, as people
do (benchmarks/review_loop.py measures what such answers teach the model).
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from contract.decisions import photo_location
from contract.review_quality import MODEL_CLASSES

TIMEOUT_SECONDS = 30.0


@dataclass
class SimulatedPerson:
    """A reviewer who knows the truth and still answers wrongly on `error_rate` of the
    photos of a class (the other class instead), at random by `seed`: the same seed makes
    the same mistakes. A photo that is neither class is always answered right."""

    error_rate: float = 0.0
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.error_rate < 1:
            raise ValueError(f"error_rate must be in [0, 1), got {self.error_rate}")
        self._rng = random.Random(self.seed)

    def answer(self, truth: str) -> str:
        # One draw per answer, whatever the rate, so two rates see the same photos' draws.
        errs = self._rng.random() < self.error_rate
        if truth not in MODEL_CLASSES or not errs:
            return truth
        return self._rng.choice([name for name in MODEL_CLASSES if name != truth])


@dataclass
class ScriptedReview:
    """What the scripted reviewer did: the queue before and after, and its answers."""

    pending_before: int
    pending_after: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0  # photos another reviewer answered first
    unknown: int = 0  # photos it had no true label for (left in the queue)


def review_queue(
    url: str, truth: Mapping[str, str], person: SimulatedPerson | None = None
) -> ScriptedReview:
    """Answer every queued photo that `truth` (s3:// id -> answer) labels, at the review
    server `url` (http://127.0.0.1:PORT/), as `person` would (right every time when
    none); photos it does not know are skipped."""
    person = person or SimulatedPerson()
    base = url.rstrip("/")
    first = _call(f"{base}/api/next")
    result = ScriptedReview(pending_before=first["pending"])
    item, skipped = first["item"], set[str]()
    # Past the last photo skipped: an answered photo leaves the queue, a skipped one stays.
    position = ""
    while item is not None and item["image"] not in skipped:
        answer = truth.get(photo_location(item["image"]))  # truth is by key, ids by upload
        if answer is None:
            skipped.add(item["image"])
            result.unknown += 1
            position = "?" + urlencode({"after": item["image"], "queued_at": item["queued_at"]})
        else:
            answer = person.answer(answer)
            body = {"image": item["image"], "answer": answer, "revision": item.get("revision", 0)}
            status, _ = _post(f"{base}/api/answer", body)
            if status == 200:
                result.answers[answer] += 1
            else:
                result.conflicts += 1  # 409: someone else answered it; the next one is new
        item = _call(f"{base}/api/next{position}")["item"]
    result.pending_after = _call(f"{base}/api/counts")["pending"]
    return result


def _call(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
        return json.load(response)


def _post(url: str, body: Mapping[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        if error.code != 409:
            raise
        return error.code, json.load(error)
