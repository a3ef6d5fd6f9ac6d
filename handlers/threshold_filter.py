"""threshold filter: pass confident inferences on, stop doubtful ones.

The event's inferences must be a distribution over the model's labels (InvalidEvent
otherwise). It passes when some probability reaches THRESHOLD (default and rules:
contract.threshold, which the scheduled monitor reads too); otherwise the handler raises
THRESHOLD_CONFIDENCE_NOT_MET, the error type the state machine catches.
No boto3 here: this handler calls no AWS API, and stays fast to load.
"""

from __future__ import annotations

import os
from typing import Any

from contract.threshold import ThresholdError, threshold_from_environment
from handlers.workflow_event import (
    ConfigurationError,
    InvalidEvent,
    WorkflowError,
    WorkflowEvent,
    log,
)


class THRESHOLD_CONFIDENCE_NOT_MET(WorkflowError):  # named as the state machine Catches it
    """No class reaches the confidence threshold."""


def handler(event: object, context: object = None) -> dict[str, Any]:
    threshold = configured_threshold()
    workflow_event = WorkflowEvent.parse(event)
    if not workflow_event.inferences:
        raise InvalidEvent("the event has no inferences (run classify first)")
    # One probability per label summing to 1: else [0.01, 0.01, 0.98] would pass as a
    # third label, and [0.99, 0.99] as a confident one.
    workflow_event.check_inferences()
    label, confidence = workflow_event.top_inference()
    fields = {"s3_key": workflow_event.s3_key, "label": label, "confidence": confidence}
    if confidence < threshold:
        log("WARNING", "confidence below threshold", context, threshold=threshold, **fields)
        raise THRESHOLD_CONFIDENCE_NOT_MET(
            f"best inference {label} at {confidence:.4f} is below the threshold {threshold}"
        )
    log("INFO", "confidence meets threshold", context, threshold=threshold, **fields)
    return workflow_event.response()


def configured_threshold() -> float:
    try:
        return threshold_from_environment(os.environ)
    except ThresholdError as error:
        raise ConfigurationError(str(error)) from None
