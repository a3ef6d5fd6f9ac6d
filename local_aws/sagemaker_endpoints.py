"""SageMaker endpoints at the local AWS: shadow variants, UpdateEndpoint with deployment
guardrails, and the per-variant metrics SageMaker publishes.

moto keeps endpoint configurations and endpoints as records only: it drops
ShadowProductionVariants, has no UpdateEndpoint, and an endpoint is InService at once.
Here (patches installed by local_aws/server.py):

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
  AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME names: traffic moves through its control route
  (`PUT /_local/routing`, which downloads each variant's ModelDataUrl), and a publisher
  thread reads its per-variant counters every second and puts them into CloudWatch as
  SageMaker publishes them (contract/variant_metrics.py), so alarms have data.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from contract import variant_metrics
from local_aws import alarms, iam
from local_aws.endpoint.metrics import ANSWER_COUNTERS
from local_aws.sagemaker_runtime import UPSTREAM_VARIABLE

log = logging.getLogger(__name__)

PUBLISH_SECONDS = 1.0
APPLY_TIMEOUT_SECONDS = 300.0  # downloading and loading a model on a busy machine
MAX_PRODUCTION_VARIANTS = 10
TRAFFIC_TYPES = ("ALL_AT_ONCE", "CANARY", "LINEAR")
CAPACITY_TYPES = ("INSTANCE_COUNT", "CAPACITY_PERCENT")
MAX_ALARMS = 10
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
LATENCY_OVERFLOW_SECONDS = 10.0  # the value published for answers past the last bucket


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
        _show_config(endpoint, config)
        PUBLISHER.start(self.current_account, self.region)
        return result

    SageMakerResponse.create_endpoint = create_endpoint  # type: ignore[method-assign]


def _show_config(endpoint: Any, config: Any) -> None:
    """DescribeEndpoint's variants of `config`, as SageMaker shows them."""
    endpoint.endpoint_config_name = config.endpoint_config_name
    endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
    shadow = getattr(config, "shadow_production_variants", None)
    if shadow:
        endpoint.shadow_production_variants = endpoint._process_production_variants(shadow)
    elif hasattr(endpoint, "shadow_production_variants"):
        del endpoint.shadow_production_variants


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


@dataclass(frozen=True)
class Fleet:
    """A configuration's variants as the local endpoint's routing takes them."""

    routes: list[dict[str, Any]]  # {"variant", "model_data", "weight"}
    shadow: dict[str, Any] | None

    def total(self) -> float:
        return sum(route["weight"] for route in self.routes) or 1.0


def _model_data(backend: Any, model_name: str) -> str:
    """The model.tar.gz a model serves: its container's, or, for a model made from a
    registered version (Containers=[{ModelPackageName}]), the package's, as SageMaker
    resolves it (local_aws/model_packages.py)."""
    model = backend._models[model_name]
    container = model.primary_container or (model.containers or [{}])[0]
    if container.get("ModelDataUrl") or not container.get("ModelPackageName"):
        return str(container.get("ModelDataUrl", ""))
    package = backend.describe_model_package(container["ModelPackageName"])
    specification = package.inference_specification or {}
    return str((specification.get("Containers") or [{}])[0].get("ModelDataUrl", ""))


def fleet_of(backend: Any, config: Any) -> Fleet:
    routes = [
        {
            "variant": variant["VariantName"],
            "model_data": _model_data(backend, variant["ModelName"]),
            "weight": float(variant.get("InitialVariantWeight", 1.0)),
        }
        for variant in config.production_variants
    ]
    shadows = getattr(config, "shadow_production_variants", None) or []
    shadow = (
        {
            "variant": shadows[0]["VariantName"],
            "model_data": _model_data(backend, shadows[0]["ModelName"]),
            "weight": 1.0,
        }
        if shadows
        else None
    )
    return Fleet(routes, shadow)


def mixed(old: Fleet, new: Fleet, share: float) -> dict[str, Any]:
    """The routing with `share` of the traffic on the new fleet and the rest on the old:
    each fleet's variants keep their weights' proportions within their share. A fleet
    that takes all the traffic keeps its weight-0 variants too: SageMaker deploys every
    production variant of a configuration (its model loaded, TargetVariant answered), so
    a model that cannot be loaded fails the update whatever its weight."""
    routes = []
    for fleet, part in ((old, 1 - share), (new, share)):
        for route in fleet.routes:
            weight = route["weight"] / fleet.total() * part
            if weight > 0 or part >= 1:
                routes.append({**route, "weight": weight})
    return {"routes": routes, "shadow": new.shadow if share >= 1 else old.shadow}


def traffic_steps(deployment: dict[str, Any], new_config: Any) -> list[float]:
    """The new fleet's share after each step: CANARY (canary, 1), LINEAR (step, 2 step,
    ..., 1) or ALL_AT_ONCE (1). INSTANCE_COUNT sizes are shares of the new fleet's
    instances."""
    routing = deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    instances = sum(
        int(variant.get("InitialInstanceCount", 1)) for variant in new_config.production_variants
    )

    def share(size: dict[str, Any]) -> float:
        if size["Type"] == "CAPACITY_PERCENT":
            return min(1.0, size["Value"] / 100)
        return min(1.0, size["Value"] / max(1, instances))

    if routing["Type"] == "CANARY":
        return [share(routing["CanarySize"]), 1.0]
    if routing["Type"] == "LINEAR":
        step = share(routing["LinearStepSize"])
        steps = [min(1.0, step * index) for index in range(1, int(1 / step) + 2)]
        return sorted(set(steps))
    return [1.0]


class EndpointUnavailable(Exception):
    """The local endpoint did not take or apply a routing."""


def upstream_url() -> str:
    import os

    url = os.environ.get(UPSTREAM_VARIABLE, "").rstrip("/")
    if not url:
        raise EndpointUnavailable(f"{UPSTREAM_VARIABLE} names no local endpoint")
    return url


def push(routing: dict[str, Any]) -> None:
    """Give the local endpoint new routes and wait until every worker serves them."""
    try:
        answer = requests.put(f"{upstream_url()}/_local/routing", json=routing, timeout=600)
    except requests.RequestException as error:
        raise EndpointUnavailable(f"the local endpoint is unreachable: {error}") from error
    if answer.status_code != 200:
        raise EndpointUnavailable(f"the local endpoint refused the routing: {answer.text[:500]}")
    generation = answer.json()["generation"]
    deadline = time.monotonic() + APPLY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        state = requests.get(f"{upstream_url()}/_local/routing", timeout=10).json()
        if state["applied_generation"] >= generation:
            return
        time.sleep(0.1)
    raise EndpointUnavailable(f"the local endpoint did not apply routing {generation} in time")


class Deployment(threading.Thread):
    """One UpdateEndpoint, carried out as SageMaker carries it out."""

    def __init__(self, backend: Any, endpoint: Any, new_config: Any, deployment: dict[str, Any]):
        super().__init__(name=f"update-{endpoint.endpoint_name}", daemon=True)
        self.backend = backend
        self.endpoint = endpoint
        self.old_config = backend.endpoint_configs[endpoint.endpoint_config_name]
        self.new_config = new_config
        self.deployment = deployment
        rollback = deployment.get("AutoRollbackConfiguration") or {}
        self.alarm_names = [alarm["AlarmName"] for alarm in rollback.get("Alarms", [])]

    def run(self) -> None:
        old = fleet_of(self.backend, self.old_config)
        new = fleet_of(self.backend, self.new_config)
        policy = self.deployment.get("BlueGreenUpdatePolicy")
        try:
            if policy is None:
                push(mixed(old, new, 1.0))
            elif not self._guarded(old, new, policy):
                return  # rolled back, InService on the old configuration
        except EndpointUnavailable as error:
            log.error("UpdateEndpoint %s failed: %s", self.endpoint.endpoint_name, error)
            self._roll_back(old, f"Update failed: {error}")
            return
        _show_config(self.endpoint, self.new_config)
        self._finish("InService")

    def _guarded(self, old: Fleet, new: Fleet, policy: dict[str, Any]) -> bool:
        """Shift the traffic step by step; False when it was rolled back."""
        routing = policy["TrafficRoutingConfiguration"]
        timeout = policy.get("MaximumExecutionTimeoutInSeconds")
        deadline = time.monotonic() + timeout if timeout else None
        steps = traffic_steps(self.deployment, self.new_config)
        for index, share in enumerate(steps):
            push(mixed(old, new, share))
            log.info(
                "%s: %.0f%% of the traffic on the new fleet",
                self.endpoint.endpoint_name,
                100 * share,
            )
            last = index == len(steps) - 1
            bake = routing["WaitIntervalInSeconds"] if not last or len(steps) == 1 else 0
            if last:
                bake += policy.get("TerminationWaitInSeconds", 0)
            reason = self._bake(bake, deadline)
            if reason:
                self._roll_back(old, reason)
                return False
        return True

    def _bake(self, seconds: float, deadline: float | None) -> str | None:
        """Watch the rollback alarms for `seconds`; the reason to roll back, if any."""
        end = time.monotonic() + seconds
        while True:
            firing = alarms.in_alarm(
                self.backend.account_id, self.backend.region_name, self.alarm_names
            )
            if firing:
                return f"Alarm(s) {', '.join(firing)} in ALARM: the deployment was rolled back."
            if deadline is not None and time.monotonic() > deadline:
                return "MaximumExecutionTimeoutInSeconds passed: the deployment was rolled back."
            if time.monotonic() >= end:
                return None
            time.sleep(min(PUBLISH_SECONDS, max(0.0, end - time.monotonic())))

    def _roll_back(self, old: Fleet, reason: str) -> None:
        log.warning("%s: %s", self.endpoint.endpoint_name, reason)
        self.endpoint.endpoint_status = "RollingBack"
        self.endpoint.last_modified_time = datetime.now(UTC)
        for attempt in range(3):
            try:
                push(mixed(old, old, 1.0))
                break
            except EndpointUnavailable as error:
                log.error(
                    "rollback of %s, attempt %d: %s",
                    self.endpoint.endpoint_name,
                    attempt + 1,
                    error,
                )
                time.sleep(1.0)
        _show_config(self.endpoint, self.old_config)
        self.endpoint.failure_reason = reason
        self._finish("InService")

    def _finish(self, status: str) -> None:
        self.endpoint.endpoint_status = status
        self.endpoint.last_modified_time = datetime.now(UTC)


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


# --- the per-variant metrics SageMaker publishes ---------------------------------------


def _timestamp() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # moto keeps naive UTC times


def publish(account: str, region: str, state: dict[str, Any], previous: dict[str, Any]) -> None:
    """Put the counters' growth since `previous` into CloudWatch, per variant."""
    cloudwatch = alarms.backend(account, region)
    endpoint = state["endpoint_name"]
    for variant, counters in state["variants"].items():
        before: dict[str, Any] | None = previous.get(variant)
        if before is None or counters["invocations"] < before["invocations"]:
            before = {key: 0 for key in counters}
            before["latency_buckets"] = [[bound, 0] for bound, _ in counters["latency_buckets"]]
        grown = {key: counters[key] - before[key] for key in counters if key != "latency_buckets"}
        latencies = [
            (bound if bound is not None else LATENCY_OVERFLOW_SECONDS, count - was)
            for (bound, count), (_, was) in zip(
                counters["latency_buckets"], before["latency_buckets"], strict=True
            )
        ]
        calls = grown["invocations"] + grown["errors_4xx"] + grown["errors_5xx"]
        if calls <= 0:
            continue
        dimensions = variant_metrics.dimensions(endpoint, variant)
        now = _timestamp()
        data = [
            {"MetricName": variant_metrics.INVOCATIONS, "Value": calls, "Unit": "None"},
            {
                "MetricName": variant_metrics.INVOCATION_4XX_ERRORS,
                "Value": grown["errors_4xx"],
                "Unit": "None",
            },
            {
                "MetricName": variant_metrics.INVOCATION_5XX_ERRORS,
                "Value": grown["errors_5xx"],
                "Unit": "None",
            },
        ]
        values = [(seconds * 1e6, count) for seconds, count in latencies if count > 0]
        if values:
            data.append(
                {
                    "MetricName": variant_metrics.MODEL_LATENCY,
                    "Values": [value for value, _ in values],
                    "Counts": [count for _, count in values],
                    "Unit": "Microseconds",
                }
            )
        for datum in data:
            datum["Dimensions"] = dimensions
            datum["Timestamp"] = now
        cloudwatch.put_metric_data(variant_metrics.SAGEMAKER_NAMESPACE, data)
        answered = grown["invocations"]
        if answered > 0:
            cloudwatch.put_metric_data(
                variant_metrics.ENDPOINT_NAMESPACE,
                [
                    {
                        "MetricName": metric,
                        "Dimensions": dimensions,
                        "Timestamp": now,
                        "Unit": "None",
                        "StatisticValues": _answer_statistics(metric, grown[counter], answered),
                    }
                    for metric, counter in ANSWER_COUNTERS.items()
                ],
            )


def _answer_statistics(metric: str, total: float, answered: float) -> dict[str, float]:
    """A period's statistic set of an answer metric from its sum: exact for the 0-or-1
    metrics (a share); Confidence's Minimum and Maximum are its mean, since the local
    endpoint keeps sums, not extremes (docs/local-mode.md)."""
    if metric == variant_metrics.CONFIDENCE:
        low = high = total / answered
    else:
        low = 0.0 if total < answered else 1.0
        high = 1.0 if total > 0 else 0.0
    return {"SampleCount": answered, "Sum": total, "Minimum": low, "Maximum": high}


class Publisher:
    """One thread per local AWS: the local endpoint's counters to CloudWatch each second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, account: str, region: str) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(account, region), name="variant-metrics", daemon=True
                )
                self._thread.start()

    def _run(self, account: str, region: str) -> None:
        previous: dict[str, Any] = {}
        while True:
            time.sleep(PUBLISH_SECONDS)
            try:
                state = requests.get(f"{upstream_url()}/_local/routing", timeout=5).json()
                publish(account, region, state, previous)
                previous = state["variants"]
            except (requests.RequestException, EndpointUnavailable, ValueError, KeyError) as error:
                log.debug("variant metrics not read: %s", error)


PUBLISHER = Publisher()

PATCHES = (patch_create_endpoint_config, patch_create_endpoint, patch_update_endpoint)
