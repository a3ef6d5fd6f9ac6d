"""threshold filter: pass confident inferences on, stop doubtful ones.

The event's inferences must be a distribution over the model's labels (InvalidEvent
otherwise). It passes when some probability reaches THRESHOLD (default and rules:
contract.threshold, which the scheduled monitor reads too); otherwise the handler raises
THRESHOLD_CONFIDENCE_NOT_MET, the error type the state machine catches.

A photo the model calls unfamiliar (classify's `familiar` is false: it looks like none of
the photos the model learned from) never passes, whatever its confidence: the handler
raises PHOTO_UNFAMILIAR, which the state machine catches to queue it for review with the
reason `unfamiliar`. A photo whose familiarity is unknown (a model version without it)
is judged by its confidence alone, as before.

A classified photo that passes also gets `decision.audit`: whether it belongs to the
audit sample, the share AUDIT_RATE (default contract.decisions.DEFAULT_AUDIT_RATE) of
passed photos that the state machine queues for review too, so that accuracy past the
gate can be measured on photos nobody chose. The sample is a hash of the photo's id, not
a random draw: the same photo is always in it or always out (a rerun or a retry decides
as the first run did, and a test can name a sampled photo), and since the hash knows
nothing of the image or the model's answer, the sample is unbiased as to both.
No boto3 here: this handler calls no AWS API, and stays fast to load.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

from contract import shown
from contract.decisions import AUDIT_RATE_ENVIRONMENT_VARIABLE, DEFAULT_AUDIT_RATE
from contract.threshold import ThresholdError, threshold_from_environment
from handlers.errors import ConfigurationError, InvalidEvent, WorkflowError
from handlers.json_log import log
from handlers.workflow_event import WorkflowEvent


class THRESHOLD_CONFIDENCE_NOT_MET(WorkflowError):  # named as the state machine Catches it
    """No class reaches the confidence threshold."""


class PHOTO_UNFAMILIAR(WorkflowError):  # named as the state machine Catches it
    """The model does not know photos like this one (contract/familiarity.py)."""


def handler(event: object, context: object = None) -> dict[str, Any]:
    threshold = configured_threshold()
    audit_rate = configured_audit_rate()
    workflow_event = WorkflowEvent.parse(event)
    if not workflow_event.inferences:
        raise InvalidEvent("the event has no inferences (run classify first)")
    # One probability per label summing to 1: else [0.01, 0.01, 0.98] would pass as a
    # third label, and [0.99, 0.99] as a confident one.
    workflow_event.check_inferences()
    label, confidence = workflow_event.top_inference()
    fields = {"s3_key": workflow_event.s3_key, "label": label, "confidence": confidence}
    if workflow_event.familiar is False:
        log(
            "WARNING", "photo unfamiliar", context, familiarity=workflow_event.familiarity, **fields
        )
        raise PHOTO_UNFAMILIAR(
            f"the photo is unlike the model's training photos (familiarity "
            f"{workflow_event.familiarity:.4f}); its best inference {label} at "
            f"{confidence:.4f} is not routed"
        )
    if confidence < threshold:
        log("WARNING", "confidence below threshold", context, threshold=threshold, **fields)
        raise THRESHOLD_CONFIDENCE_NOT_MET(
            f"best inference {label} at {confidence:.4f} is below the threshold {threshold}"
        )
    response = workflow_event.response()
    decision = response.get("decision")
    if decision is not None:
        decision["audit"] = in_audit_sample(decision["image"], audit_rate)
        fields["audit"] = decision["audit"]
    log("INFO", "confidence meets threshold", context, threshold=threshold, **fields)
    return response


def in_audit_sample(image: str, rate: float) -> bool:
    """Whether the photo `image` (its id) is in an audit sample of share `rate`: the first
    8 bytes of its SHA-256 read as a fraction of 2**64, below `rate`."""
    digest = hashlib.sha256(image.encode()).digest()
    return int.from_bytes(digest[:8], "big") < rate * 2**64


def configured_audit_rate() -> float:
    raw = os.environ.get(AUDIT_RATE_ENVIRONMENT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_AUDIT_RATE
    try:
        rate = float(raw)
    except ValueError:
        rate = math.nan
    if not 0.0 <= rate <= 1.0:  # NaN fails too
        raise ConfigurationError(
            f"{AUDIT_RATE_ENVIRONMENT_VARIABLE} must be a share between 0 and 1, got {shown(raw)}"
        )
    return rate


def configured_threshold() -> float:
    try:
        return threshold_from_environment(os.environ)
    except ThresholdError as error:
        raise ConfigurationError(str(error)) from None
