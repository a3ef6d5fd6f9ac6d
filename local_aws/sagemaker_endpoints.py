"""SageMaker endpoints at the local AWS: shadow variants, UpdateEndpoint with deployment
guardrails, and the per-variant metrics SageMaker publishes.

moto keeps endpoint configurations and endpoints as records only: it drops
ShadowProductionVariants, has no UpdateEndpoint, and an endpoint is InService at once.
Here (patches installed by local_aws/moto_patches.py):

- CreateEndpointConfig keeps ShadowProductionVariants and refuses what SageMaker refuses
  (a shadow variant with more than one production variant or more than one shadow, a
  variant name used twice, more than 10 production variants), with ValidationException.
- UpdateEndpoint validates the DeploymentConfig as the API reference bounds it (a
  CanarySize at most half the variant's instances, a LinearStepSize 10-50% of them),
  refuses a blue/green deployment whose new configuration does not name the same
  production variants as the old one (deployment guardrails' exclusions) and an update
  that removes an autoscaled variant or changes its instance type (Application Auto
  Scaling's scalable targets, per variant, in moto) or whose models' execution role may
  not read its rollback alarms (cloudwatch:DescribeAlarms), sets the endpoint
  `Updating` and deploys in a thread, as SageMaker does: without guardrails, all at once;
  with a BlueGreenUpdatePolicy, the new fleet's share of the traffic goes CanarySize
  (CANARY) or LinearStepSize at a time (LINEAR) or all at once, each step baked for
  WaitIntervalInSeconds and the whole for TerminationWaitInSeconds more, while the
  AutoRollbackConfiguration alarms are evaluated every second (local_aws/alarms.py):
  one in ALARM, or MaximumExecutionTimeoutInSeconds passed, sends the endpoint to
  `RollingBack`, all traffic back to the old configuration, then `InService` on it.
- The endpoint that serves it all is the local endpoint (local_aws/endpoint), the one
  AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME names: a deployment moves its traffic
  (local_aws/endpoint_deployment.py), and a publisher thread puts its per-variant
  counters into CloudWatch (local_aws/variant_metrics_publisher.py), so alarms have data.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

from local_aws import iam
from local_aws.endpoint_deployment import Deployment, show_config
from local_aws.variant_metrics_publisher import PUBLISHER

log = logging.getLogger(__name__)

MAX_PRODUCTION_VARIANTS = 10
TRAFFIC_TYPES = ("ALL_AT_ONCE", "CANARY", "LINEAR")
CAPACITY_TYPES = ("INSTANCE_COUNT", "CAPACITY_PERCENT")
MAX_ALARMS = 10
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def _validation(message: str) -> Exception:
    from moto.sagemaker.exceptions import ValidationError

    return ValidationError(message)


# --- CreateEndpointConfig: shadow variants ------------------------------------------


def check_endpoint_config(production: list[dict[str, Any]], shadow: list[dict[str, Any]]) -> None:
    """What SageMaker refuses in CreateEndpointConfig's variants (API reference:
    ProductionVariants 1-10; with ShadowProductionVariants, one production variant and
    one shadow variant; variant names unique)."""
    if not 1 <= len(production) <= MAX_PRODUCTION_VARIANTS:
        raise _validation(
            f"1 validation error detected: Value at 'productionVariants' failed to satisfy "
            f"constraint: Member must have length between 1 and {MAX_PRODUCTION_VARIANTS}"
        )
    if shadow and (len(production) != 1 or len(shadow) != 1):
        raise _validation(
            "An endpoint configuration with ShadowProductionVariants must have exactly one "
            "production variant and one shadow variant."
        )
    names = [variant.get("VariantName") for variant in [*production, *shadow]]
    duplicates = sorted({name for name in names if names.count(name) > 1 and name})
    if duplicates:
        raise _validation(f"Variant name(s) {duplicates} are used more than once.")
    for variant in [*production, *shadow]:
        weight = variant.get("InitialVariantWeight", 1.0)
        if float(weight) < 0:
            raise _validation(f"InitialVariantWeight of {variant['VariantName']} is below 0.")


def patch_create_endpoint_config() -> None:
    from moto.sagemaker.responses import SageMakerResponse

    original = SageMakerResponse.create_endpoint_config

    def create_endpoint_config(self: Any) -> Any:
        production = self._get_param("ProductionVariants") or []
        shadow = self._get_param("ShadowProductionVariants") or []
        check_endpoint_config(production, shadow)
        self.sagemaker_backend.validate_production_variants(shadow)  # its model must exist
        result = original(self)
        config = self.sagemaker_backend.endpoint_configs[self._get_param("EndpointConfigName")]
        if shadow:
            config.shadow_production_variants = shadow  # DescribeEndpointConfig shows it
        return result

    SageMakerResponse.create_endpoint_config = create_endpoint_config  # type: ignore[method-assign]


def patch_create_endpoint() -> None:
    from moto.sagemaker.responses import SageMakerResponse

    original = SageMakerResponse.create_endpoint

    def create_endpoint(self: Any) -> Any:
        result = original(self)
        endpoint = self.sagemaker_backend.endpoints[self._get_param("EndpointName")]
        config = self.sagemaker_backend.endpoint_configs[endpoint.endpoint_config_name]
        show_config(endpoint, config)
        PUBLISHER.start(self.current_account, self.region)
        return result

    SageMakerResponse.create_endpoint = create_endpoint  # type: ignore[method-assign]


# --- UpdateEndpoint ----------------------------------------------------------------


def _capacity(size: Any, what: str) -> dict[str, Any]:
    if not isinstance(size, dict) or size.get("Type") not in CAPACITY_TYPES:
        raise _validation(f"{what}.Type must be one of {list(CAPACITY_TYPES)}.")
    value = size.get("Value")
    if not isinstance(value, int) or value < 1:
        raise _validation(f"{what}.Value must be an integer of at least 1.")
    if size["Type"] == "CAPACITY_PERCENT" and value > 100:
        raise _validation(f"{what}.Value is a percentage: at most 100.")
    return size


def check_deployment_config(deployment: dict[str, Any]) -> None:
    """DeploymentConfig's bounds (API reference: BlueGreenUpdatePolicy,
    TrafficRoutingConfig, CapacitySize, AutoRollbackConfig)."""
    blue_green = deployment.get("BlueGreenUpdatePolicy")
    if deployment.get("RollingUpdatePolicy") is not None:
        if blue_green is not None:
            raise _validation("Only one update policy may be given in DeploymentConfig.")
        raise _validation(
            "RollingUpdatePolicy is not emulated by the local AWS (docs/local-mode.md)."
        )
    if blue_green is not None:
        routing = blue_green.get("TrafficRoutingConfiguration")
        if not isinstance(routing, dict) or routing.get("Type") not in TRAFFIC_TYPES:
            raise _validation(
                f"TrafficRoutingConfiguration.Type must be one of {list(TRAFFIC_TYPES)}."
            )
        wait = routing.get("WaitIntervalInSeconds")
        if not isinstance(wait, int) or not 0 <= wait <= 3600:
            raise _validation("WaitIntervalInSeconds must be an integer from 0 to 3600.")
        if routing["Type"] == "CANARY":
            _capacity(routing.get("CanarySize"), "CanarySize")
        if routing["Type"] == "LINEAR":
            _capacity(routing.get("LinearStepSize"), "LinearStepSize")
        termination = blue_green.get("TerminationWaitInSeconds", 0)
        if not isinstance(termination, int) or not 0 <= termination <= 3600:
            raise _validation("TerminationWaitInSeconds must be an integer from 0 to 3600.")
        timeout = blue_green.get("MaximumExecutionTimeoutInSeconds")
        if timeout is not None:
            if not isinstance(timeout, int) or not 600 <= timeout <= 28800:
                raise _validation("MaximumExecutionTimeoutInSeconds must be from 600 to 28800.")
            if timeout <= wait + termination:
                raise _validation(
                    "MaximumExecutionTimeoutInSeconds must be larger than the total waiting "
                    "time of TerminationWaitInSeconds and WaitIntervalInSeconds."
                )
    rollback = deployment.get("AutoRollbackConfiguration")
    if rollback is not None:
        names = rollback.get("Alarms")
        if not isinstance(names, list) or not 1 <= len(names) <= MAX_ALARMS:
            raise _validation(f"AutoRollbackConfiguration.Alarms must hold 1 to {MAX_ALARMS}.")
        if any(not isinstance(alarm, dict) or not alarm.get("AlarmName") for alarm in names):
            raise _validation("Each AutoRollbackConfiguration alarm needs an AlarmName.")


def _serving_instances(config: Any) -> int:
    """The instances of the configuration's variants that take traffic (weight above 0)."""
    return sum(
        int(variant.get("InitialInstanceCount", 1))
        for variant in config.production_variants
        if float(variant.get("InitialVariantWeight", 1.0)) > 0
    )


def _instances_of(size: dict[str, Any], fleet: int) -> int:
    """A CapacitySize in whole instances of a `fleet`-instance variant (a percentage is
    rounded up: a step moves at least one instance)."""
    if size["Type"] == "INSTANCE_COUNT":
        return int(size["Value"])
    return max(1, math.ceil(size["Value"] * fleet / 100))


def check_traffic_sizes(deployment: dict[str, Any], new_config: Any) -> None:
    """TrafficRoutingConfig's sizes against the new fleet (API reference: CanarySize "must
    be less than or equal to 50% of the variant's total instance count"; LinearStepSize
    "must be 10-50%" of it). The variant's count is that of the new configuration's
    variants that take traffic."""
    routing = (deployment.get("BlueGreenUpdatePolicy") or {}).get("TrafficRoutingConfiguration")
    if not routing or routing["Type"] == "ALL_AT_ONCE":
        return
    fleet = _serving_instances(new_config)
    if routing["Type"] == "CANARY":
        canary = _instances_of(routing["CanarySize"], fleet)
        if 2 * canary > fleet:
            raise _validation(
                f"CanarySize of {canary} instance(s) is more than 50% of the variant's total "
                f"instance count ({fleet}): it must be less than or equal to 50%."
            )
        return
    step = routing["LinearStepSize"]
    instances = _instances_of(step, fleet)
    percent = step["Value"] if step["Type"] == "CAPACITY_PERCENT" else 100 * instances / fleet
    if not 10 <= percent <= 50 or 2 * instances > fleet:
        raise _validation(
            f"LinearStepSize of {instances} instance(s) must be 10-50% of the variant's total "
            f"instance count ({fleet})."
        )


def check_autoscaled_variants_kept(backend: Any, endpoint_name: str, old: Any, new: Any) -> None:
    """SageMaker refuses an update that removes a variant registered with Application Auto
    Scaling or changes its instance type ("Update endpoints that use auto scaling":
    deregister it first, then register the updated variant again)."""
    from moto.applicationautoscaling.models import applicationautoscaling_backends

    scaling = applicationautoscaling_backends[backend.account_id][backend.region_name]
    targets = scaling.targets.get(SCALABLE_DIMENSION, {})
    kept = {variant["VariantName"]: variant for variant in new.production_variants}
    for variant in old.production_variants:
        name = variant["VariantName"]
        if f"endpoint/{endpoint_name}/variant/{name}" not in targets:
            continue
        if name not in kept:
            raise _validation(
                f"The variant {name} of endpoint {endpoint_name} is a scalable target of "
                "Application Auto Scaling: deregister it (DeregisterScalableTarget) before "
                "an update that removes it."
            )
        if kept[name].get("InstanceType") != variant.get("InstanceType"):
            raise _validation(
                f"The variant {name} of endpoint {endpoint_name} is a scalable target of "
                "Application Auto Scaling: deregister it (DeregisterScalableTarget) before "
                "an update that changes its instance type."
            )


def check_rollback_alarms_readable(
    backend: Any, new_config: Any, deployment: dict[str, Any]
) -> None:
    """SageMaker reads the AutoRollbackConfiguration alarms as the models' execution role
    (deployment guardrails, "Auto-Rollback Configuration and Monitoring": the execution
    role needs cloudwatch:DescribeAlarms on them); a deployment it could not watch is
    refused here rather than left without its rollback. Roles this IAM does not hold
    (a model made with a made-up ARN) are not evaluated."""
    from moto.iam.exceptions import NotFoundException

    names = [
        alarm["AlarmName"]
        for alarm in (deployment.get("AutoRollbackConfiguration") or {}).get("Alarms", [])
    ]
    roles = {
        backend._models[variant["ModelName"]].execution_role_arn
        for variant in new_config.production_variants
        if variant["ModelName"] in backend._models
    }
    for role in sorted(role for role in roles if role):
        for name in names:
            alarm = f"arn:aws:cloudwatch:{backend.region_name}:{backend.account_id}:alarm:{name}"
            try:
                iam.authorize(iam.Request(role, "cloudwatch:DescribeAlarms", alarm, {}))
            except (NotFoundException, KeyError):
                break  # not a role of this IAM
            except iam.AccessDenied as denied:
                raise _validation(
                    f"The execution role {role} cannot read the rollback alarm {name}: "
                    f"{denied} (it needs cloudwatch:DescribeAlarms on the alarm)."
                ) from None


def patch_update_endpoint() -> None:
    from moto.core.responses import ActionResult
    from moto.sagemaker.responses import SageMakerResponse

    def update_endpoint(self: Any) -> Any:
        backend = self.sagemaker_backend
        name = self._get_param("EndpointName")
        config_name = self._get_param("EndpointConfigName")
        deployment = self._get_param("DeploymentConfig") or {}
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise _validation(f'Could not find endpoint "{name}".')
        if endpoint.endpoint_status != "InService":
            raise _validation(f'Cannot update in-progress endpoint "{endpoint.arn}".')
        new_config = backend.endpoint_configs.get(config_name)
        if new_config is None:
            raise _validation(f'Could not find endpoint configuration "{config_name}".')
        check_deployment_config(deployment)
        old_config = backend.endpoint_configs.get(endpoint.endpoint_config_name)
        if deployment.get("BlueGreenUpdatePolicy") is not None and old_config is not None:
            old_names = sorted(v["VariantName"] for v in old_config.production_variants)
            new_names = sorted(v["VariantName"] for v in new_config.production_variants)
            if old_names != new_names:
                raise _validation(
                    "A blue/green deployment's new endpoint configuration must have the same "
                    f"production variant names as the old one ({old_names}), got {new_names}."
                )
        if old_config is None:
            raise _validation(
                f"The endpoint's configuration {endpoint.endpoint_config_name} is gone."
            )
        check_traffic_sizes(deployment, new_config)
        check_rollback_alarms_readable(backend, new_config, deployment)
        check_autoscaled_variants_kept(backend, name, old_config, new_config)
        endpoint.endpoint_status = "Updating"
        endpoint.failure_reason = None
        endpoint.last_deployment_config = deployment or None
        endpoint.last_modified_time = datetime.now(UTC)
        PUBLISHER.start(backend.account_id, backend.region_name)
        Deployment(backend, endpoint, new_config, deployment).start()
        return ActionResult({"EndpointArn": endpoint.arn})

    SageMakerResponse.update_endpoint = update_endpoint  # type: ignore[attr-defined]
