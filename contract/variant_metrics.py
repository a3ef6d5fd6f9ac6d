"""The per-variant endpoint metrics a guarded rollout watches: their names, in one place.

SageMaker publishes, per endpoint and variant (dimensions EndpointName, VariantName), in
the AWS/SageMaker namespace: Invocations, Invocation4XXErrors, Invocation5XXErrors and
ModelLatency (microseconds). The project adds DOUBTFUL_SHARE: per answer, 1 when its
best probability is below the workflow's threshold (contract.threshold) and 0 when not,
so its Average over a period is the variant's doubtful share, to compare with the share
the model's baseline profile measured. `training_job rollout` creates its alarms on these
names; the local AWS publishes them from the local endpoint's per-variant counters
(local_aws/sagemaker_endpoints.py). On AWS nothing publishes DOUBTFUL_SHARE yet (see
docs/operations.md): its alarm treats missing data as not breaching.

Standard library only: handlers may import it.
"""

from __future__ import annotations

SAGEMAKER_NAMESPACE = "AWS/SageMaker"
INVOCATIONS = "Invocations"
INVOCATION_4XX_ERRORS = "Invocation4XXErrors"
INVOCATION_5XX_ERRORS = "Invocation5XXErrors"
MODEL_LATENCY = "ModelLatency"  # microseconds, as SageMaker reports it

ENDPOINT_NAMESPACE = "SconesUnlimited/Endpoint"
DOUBTFUL_SHARE = "DoubtfulShare"


def dimensions(endpoint_name: str, variant: str) -> list[dict[str, str]]:
    """The dimensions of a variant's metrics, in the order SageMaker names them."""
    return [
        {"Name": "EndpointName", "Value": endpoint_name},
        {"Name": "VariantName", "Value": variant},
    ]
