"""An endpoint variant's autoscaling (Application Auto Scaling): what `deploy` registers,
and what `rollout` moves from the old variant to the new one.

SageMaker refuses an UpdateEndpoint that removes a variant registered as a scalable
target ("Update endpoints that use auto scaling", SageMaker developer guide: deregister
the variant first, update, then register the updated variant and attach its policy
again). `Scaling.of` reads a variant's target and policies, `remove` deregisters them,
`apply` registers the same on another variant.

The target-tracking value comes from a load test, as AWS's guidance derives it ("Load
testing your auto scaling configuration": SageMakerVariantInvocationsPerInstance =
MAX_RPS x SAFETY_FACTOR x 60, starting from a safety factor of 0.5). MAX_RPS is the
requests per second one instance served before its latency rose, measured with
benchmarks/endpoint_throughput.py (docs/benchmarks.md, "Autoscaling target").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from contract.aws_errors import error_code

SERVICE_NAMESPACE = "sagemaker"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
INVOCATIONS_METRIC = "SageMakerVariantInvocationsPerInstance"

# docs/benchmarks.md, "Autoscaling target": the local endpoint on the 2-core machine,
# quiet, one worker, 8 closed-loop clients (p99 38 ms; 64 clients got 433 req/s at
# ~148 ms each, the instance saturated): the highest rate before the latency climbs.
MEASURED_MAX_RPS_PER_INSTANCE = 318.0
SAFETY_FACTOR = 0.5  # AWS's recommended starting point
DEFAULT_TARGET_INVOCATIONS_PER_MINUTE = round(
    MEASURED_MAX_RPS_PER_INSTANCE * SAFETY_FACTOR * 60
)  # 9,540 per instance per minute
SCALE_OUT_COOLDOWN_SECONDS = 60
SCALE_IN_COOLDOWN_SECONDS = 300


def resource_id(endpoint_name: str, variant: str) -> str:
    return f"endpoint/{endpoint_name}/variant/{variant}"


def policy_name(endpoint_name: str) -> str:
    return f"{endpoint_name}-invocations-per-instance"


def target_tracking(target_invocations: float) -> dict[str, Any]:
    """The policy `deploy` attaches: invocations per instance per minute held at the target."""
    return {
        "TargetValue": target_invocations,
        "PredefinedMetricSpecification": {"PredefinedMetricType": INVOCATIONS_METRIC},
        "ScaleOutCooldown": SCALE_OUT_COOLDOWN_SECONDS,
        "ScaleInCooldown": SCALE_IN_COOLDOWN_SECONDS,
    }


@dataclass(frozen=True)
class Scaling:
    """A variant's scalable target and its policies, as Application Auto Scaling has them."""

    min_capacity: int
    max_capacity: int
    policies: list[dict[str, Any]] = field(default_factory=list)  # PutScalingPolicy requests

    @classmethod
    def of(cls, client: Any, endpoint_name: str, variant: str) -> Scaling | None:
        """The variant's autoscaling, or None when it has none."""
        resource = resource_id(endpoint_name, variant)
        targets = client.describe_scalable_targets(
            ServiceNamespace=SERVICE_NAMESPACE,
            ResourceIds=[resource],
            ScalableDimension=SCALABLE_DIMENSION,
        )["ScalableTargets"]
        if not targets:
            return None
        described = client.describe_scaling_policies(
            ServiceNamespace=SERVICE_NAMESPACE,
            ResourceId=resource,
            ScalableDimension=SCALABLE_DIMENSION,
        )["ScalingPolicies"]
        policies = []
        for policy in described:
            request = {"PolicyName": policy["PolicyName"], "PolicyType": policy["PolicyType"]}
            for part in (
                "TargetTrackingScalingPolicyConfiguration",
                "StepScalingPolicyConfiguration",
            ):
                if part in policy:
                    request[part] = policy[part]
            policies.append(request)
        return cls(int(targets[0]["MinCapacity"]), int(targets[0]["MaxCapacity"]), policies)

    def apply(self, client: Any, endpoint_name: str, variant: str) -> None:
        """Register `variant` with these capacities and attach the same policies."""
        register(client, endpoint_name, variant, self.min_capacity, self.max_capacity)
        resource = resource_id(endpoint_name, variant)
        for policy in self.policies:
            client.put_scaling_policy(
                ServiceNamespace=SERVICE_NAMESPACE,
                ResourceId=resource,
                ScalableDimension=SCALABLE_DIMENSION,
                **policy,
            )

    def remove(self, client: Any, endpoint_name: str, variant: str) -> None:
        """Delete the variant's policies, then deregister it (a missing part is fine)."""
        resource = resource_id(endpoint_name, variant)
        for policy in self.policies:
            _ignore_missing(
                client.delete_scaling_policy,
                PolicyName=policy["PolicyName"],
                ServiceNamespace=SERVICE_NAMESPACE,
                ResourceId=resource,
                ScalableDimension=SCALABLE_DIMENSION,
            )
        _ignore_missing(
            client.deregister_scalable_target,
            ServiceNamespace=SERVICE_NAMESPACE,
            ResourceId=resource,
            ScalableDimension=SCALABLE_DIMENSION,
        )

    def capacity_for(self, instances: int) -> int:
        """`instances` within the target's bounds (what Application Auto Scaling would keep)."""
        return max(self.min_capacity, min(self.max_capacity, instances))


def register(client: Any, endpoint_name: str, variant: str, minimum: int, maximum: int) -> None:
    client.register_scalable_target(
        ServiceNamespace=SERVICE_NAMESPACE,
        ResourceId=resource_id(endpoint_name, variant),
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=minimum,
        MaxCapacity=maximum,
    )


def _ignore_missing(call: Any, **kwargs: Any) -> None:
    try:
        call(**kwargs)
    except ClientError as error:
        if error_code(error) not in (
            "ObjectNotFoundException",
            "ValidationException",
        ):
            raise
