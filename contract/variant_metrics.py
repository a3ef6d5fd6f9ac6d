"""The per-variant endpoint metrics a guarded rollout watches: their names, in one place,
and the one computation of the answer metrics.

SageMaker publishes, per endpoint and variant (dimensions EndpointName, VariantName), in
the AWS/SageMaker namespace: Invocations, Invocation4XXErrors, Invocation5XXErrors and
ModelLatency (microseconds). The project adds, in ENDPOINT_NAMESPACE with the same
dimensions, one value per answer (`answer_values`), so each metric's Average over a
period is a share or a mean of that period's answers:

  DoubtfulShare      1 when the best probability is below the workflow's threshold
                     (contract.threshold), else 0: the doubtful share
  Confidence         the best probability: the mean confidence
  ClassShare<Label>  1 when the answer names that class, else 0: the class mix

`training_job rollout` alarms on these against the baselines (training_job/serving/rollout.py).
Two publishers compute them with `answer_values`, so they are the same metric: on AWS the
classify Lambda, in CloudWatch's embedded metric format on its log (`emf_document`,
handlers/classify.py), for every answer the workflow gets; locally the local endpoint
from its per-variant counters (local_aws/sagemaker_endpoints.py), for every answer it
gives, since the rollout's tests and benchmark call the endpoint directly. The local
Lambda executor does not extract EMF, so nothing is counted twice (docs/local-mode.md).

Standard library only: handlers may import it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

SAGEMAKER_NAMESPACE = "AWS/SageMaker"
INVOCATIONS = "Invocations"
INVOCATION_4XX_ERRORS = "Invocation4XXErrors"
INVOCATION_5XX_ERRORS = "Invocation5XXErrors"
MODEL_LATENCY = "ModelLatency"  # microseconds, as SageMaker reports it

ENDPOINT_NAMESPACE = "SconesUnlimited/Endpoint"
DOUBTFUL_SHARE = "DoubtfulShare"
CONFIDENCE = "Confidence"
CLASS_SHARE_PREFIX = "ClassShare"
DIMENSION_NAMES = ("EndpointName", "VariantName")


def dimensions(endpoint_name: str, variant: str) -> list[dict[str, str]]:
    """The dimensions of a variant's metrics, in the order SageMaker names them."""
    return [
        {"Name": name, "Value": value}
        for name, value in zip(DIMENSION_NAMES, (endpoint_name, variant), strict=True)
    ]


def class_share(label: str) -> str:
    """The class-mix metric of one class: ClassShareBicycle for "bicycle"."""
    return CLASS_SHARE_PREFIX + "".join(part.capitalize() for part in label.split("_"))


def answer_metrics(labels: Sequence[str]) -> list[str]:
    """Every answer metric's name, for a model with these classes."""
    return [DOUBTFUL_SHARE, CONFIDENCE, *(class_share(label) for label in labels)]


def answer_values(
    probabilities: Sequence[float], labels: Sequence[str], threshold: float
) -> dict[str, float]:
    """One answer's value of each answer metric (its best class is the first of equals,
    as the workflow's decision names it)."""
    best = max(range(len(probabilities)), key=lambda index: probabilities[index])
    confidence = float(probabilities[best])
    values = {DOUBTFUL_SHARE: 1.0 if confidence < threshold else 0.0, CONFIDENCE: confidence}
    for index, label in enumerate(labels):
        values[class_share(label)] = 1.0 if index == best else 0.0
    return values


def emf_document(
    endpoint_name: str, variant: str, values: dict[str, float], now: float | None = None
) -> dict[str, Any]:
    """One answer's values as a CloudWatch embedded metric format document: a log line
    CloudWatch Logs turns into these metrics, in ENDPOINT_NAMESPACE, with the dimensions
    above (the EMF specification: `_aws` with Timestamp in epoch milliseconds and
    CloudWatchMetrics directives; every dimension and metric a member of the root)."""
    return {
        "_aws": {
            "Timestamp": int((time.time() if now is None else now) * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": ENDPOINT_NAMESPACE,
                    "Dimensions": [list(DIMENSION_NAMES)],
                    "Metrics": [{"Name": name, "Unit": "None"} for name in values],
                }
            ],
        },
        "EndpointName": endpoint_name,
        "VariantName": variant,
        **values,
    }
