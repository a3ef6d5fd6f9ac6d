"""The workflow event the workflow's handlers read and return.

The event is the reference's `{"image_data": "", "s3_bucket": "", "s3_key": "",
"inferences": []}`, plus `s3_etag`: the ETag of the upload (the S3 event's), which the
decision's id carries (contract/decisions.py) and every read of the key must match.
Each handler returns `{"statusCode": 200, "body": <event>}` and also
accepts such a return value as its event, so the handlers chain as the reference does.

classify adds what answered to the body (`endpoint`, `variant`: the production variant,
named after the model version it serves; `decided_at`: when; `familiarity` and
`familiar`: the model's familiarity score and verdict, contract/familiarity.py, both
absent when the model version says nothing of familiarity), and from then on each
return value carries `decision` beside `body`: the photo's decision as the state machine
writes it to the decisions table and puts it on the event bus (contract/decisions.py),
its numbers also typed for DynamoDB (`dynamodb`), since Amazon States Language cannot
turn a JSON number into DynamoDB's string-typed N.

`image_data` carries the image (base64) only when it fits INLINE_IMAGE_BYTES; a larger
image stays in S3 and `s3_bucket`/`s3_key` are the reference classify reads it by (a
"claim check", AWS's advice for Step Functions payloads over its limit).

Its errors are handlers/errors.py's (named for the state machine's Catch and Retry).
This module imports only the standard library, contract/ and those errors, so the
threshold filter stays fast to load.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from contract import shown
from contract.decisions import CLASSES, image_id, is_etag, version_of_variant
from handlers.errors import InvalidEvent

# The classifier's output order (contract/decisions.py's CLASSES, as in the manifests).
LABELS = CLASSES

MAX_KEY_LENGTH = 1024  # S3's own limit on a key
MAX_NAME_LENGTH = 63  # SageMaker's limit on an endpoint's and a variant's name
MAX_TIME_LENGTH = 32  # an ISO 8601 UTC time with microseconds is 27 characters
# What classify adds to the event, and the longest each may be.
ANSWERED_FIELDS = (
    ("endpoint", MAX_NAME_LENGTH),
    ("variant", MAX_NAME_LENGTH),
    ("decided_at", MAX_TIME_LENGTH),
)

# The largest image serialize puts into the event itself. Step Functions fails a run
# whose state input or output is over 256 KiB (States.DataLimitExceeded, which no Catch on
# States.ALL catches), and the Lambda task's result holds the event plus Lambda's response
# metadata. 96 KiB of image is 128 KiB of base64: half the limit, the rest left for the
# key (up to 1 KiB), the inferences and the metadata. Every staged CIFAR image (32x32
# PNG, ~3 KB) fits; a phone photo does not, and travels by its S3 reference instead.
INLINE_IMAGE_BYTES = 96 * 1024

# Sums of a model's probabilities differ from 1 by float rounding only (~1e-7 for a
# float32 softmax); anything further off is not a distribution over the classes.
PROBABILITY_SUM_TOLERANCE = 1e-4


class WorkflowEvent:
    # A plain class, not a dataclass: `dataclasses` alone adds ~5 ms to every cold start.
    def __init__(
        self,
        image_data: str = "",
        s3_bucket: str = "",
        s3_key: str = "",
        inferences: list[float] | None = None,
        s3_etag: str = "",
        endpoint: str = "",
        variant: str = "",
        decided_at: str = "",
        familiarity: float | None = None,
        familiar: bool | None = None,
    ) -> None:
        self.image_data = image_data
        self.s3_bucket = s3_bucket
        self.s3_key = s3_key
        # The ETag of the upload this run decides (the trigger's, else the one serialize read):
        # part of the decision's id, and every read of the key must find that content.
        self.s3_etag = s3_etag
        self.inferences = inferences if inferences is not None else []
        # What answered, set by classify (empty before).
        self.endpoint = endpoint
        self.variant = variant
        self.decided_at = decided_at
        # The model's familiarity score and verdict (None: the model version has none).
        self.familiarity = familiarity
        self.familiar = familiar

    @classmethod
    def parse(cls, event: object) -> WorkflowEvent:
        """Read a workflow event, or a previous handler's whole return value."""
        if not isinstance(event, dict):
            raise InvalidEvent(f"the event must be a JSON object, not {type(event).__name__}")
        body = event.get("body")
        if isinstance(body, dict):
            event = body
        image_data = _field(event, "image_data", str, "")
        s3_bucket = _field(event, "s3_bucket", str, "")
        s3_key = _field(event, "s3_key", str, "")
        inferences = _field(event, "inferences", list, [])
        s3_etag = _field(event, "s3_etag", str, "").strip('"')
        if s3_etag and not is_etag(s3_etag):
            raise InvalidEvent(f"s3_etag {shown(s3_etag)} is not an S3 ETag")
        if len(s3_key) > MAX_KEY_LENGTH:
            raise InvalidEvent(f"s3_key is longer than S3's limit of {MAX_KEY_LENGTH} characters")
        if not all(_is_probability(value) for value in inferences):
            raise InvalidEvent("inferences must be a list of numbers between 0 and 1")
        familiarity = event.get("familiarity")
        if familiarity is not None and not _is_probability(familiarity):
            raise InvalidEvent("familiarity must be a number between 0 and 1")
        familiar = _field(event, "familiar", bool, None)
        if (familiarity is None) != (familiar is None):
            raise InvalidEvent("familiarity and familiar come together, or neither")
        answered = {}
        for name, limit in ANSWERED_FIELDS:
            answered[name] = _field(event, name, str, "")
            if len(answered[name]) > limit:
                raise InvalidEvent(f"{name} is longer than {limit} characters")
        return cls(
            image_data,
            s3_bucket,
            s3_key,
            [float(value) for value in inferences],
            s3_etag,
            **answered,
            familiarity=None if familiarity is None else float(familiarity),
            familiar=familiar,
        )

    def check_inferences(self) -> None:
        """Raise InvalidEvent unless the inferences are a distribution over LABELS."""
        problem = distribution_problem(self.inferences)
        if problem:
            raise InvalidEvent(f"inferences {problem}")

    def response(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "image_data": self.image_data,
            "s3_bucket": self.s3_bucket,
            "s3_key": self.s3_key,
            "inferences": self.inferences,
        }
        if self.s3_etag:
            body["s3_etag"] = self.s3_etag
        if not self.endpoint:
            return {"statusCode": 200, "body": body}
        body.update(endpoint=self.endpoint, variant=self.variant, decided_at=self.decided_at)
        if self.familiarity is not None:
            body.update(familiarity=self.familiarity, familiar=self.familiar)
        return {"statusCode": 200, "body": body, "decision": self.decision()}

    def decision(self) -> dict[str, Any]:
        """The classified photo's decision fields (contract/decisions.py's names)."""
        if not (self.s3_bucket and self.s3_key):
            raise InvalidEvent("a decision needs the photo's s3_bucket and s3_key (its id)")
        self.check_inferences()
        label, confidence = self.top_inference()
        return {
            "image": image_id(self.s3_bucket, self.s3_key, self.s3_etag),
            "label": label,
            "confidence": confidence,
            "model_version": version_of_variant(self.variant),
            "endpoint": self.endpoint,
            "variant": self.variant,
            "decided_at": self.decided_at,
            "familiarity": self.familiarity,
            "dynamodb": {
                "confidence": {"N": dynamodb_number(confidence)},
                "inferences": {"L": [{"N": dynamodb_number(v)} for v in self.inferences]},
                # NULL when unknown: the state machine's item always names the attribute.
                "familiarity": (
                    {"NULL": True}
                    if self.familiarity is None
                    else {"N": dynamodb_number(self.familiarity)}
                ),
            },
        }

    def top_inference(self) -> tuple[str, float]:
        """The most likely label and its probability (the label's index if unnamed)."""
        best = max(range(len(self.inferences)), key=self.inferences.__getitem__)
        label = LABELS[best] if best < len(LABELS) else str(best)
        return label, self.inferences[best]


def dynamodb_number(value: float) -> str:
    """`value` as DynamoDB's N: its shortest exact decimal, never in exponent notation."""
    return format(Decimal(repr(value)), "f")


def _field(event: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = event.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise InvalidEvent(f"{name} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def _is_probability(value: object) -> bool:
    # bool is an int subclass; True is not a probability. NaN fails both comparisons.
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def distribution_problem(values: list[Any]) -> str | None:
    """Why `values` is not a probability distribution over LABELS, or None if it is: one
    number in [0, 1] per label, summing to 1 (within float rounding)."""
    if len(values) != len(LABELS):
        return f"must hold {len(LABELS)} probabilities ({', '.join(LABELS)}), not {len(values)}"
    if not all(_is_probability(value) for value in values):
        return "must be numbers between 0 and 1"
    total = math.fsum(values)
    if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
        return f"must sum to 1, not {total:.6g}"
    return None
