"""One UpdateEndpoint carried out at the local AWS as SageMaker carries it out
(`Deployment`): without guardrails all at once; with a BlueGreenUpdatePolicy the new
fleet's share of the traffic goes CanarySize (CANARY) or LinearStepSize at a time (LINEAR)
or all at once, each step baked while the rollback alarms are evaluated every second
(local_aws/alarms.py); an alarm in ALARM, or MaximumExecutionTimeoutInSeconds passed,
sends all traffic back to the old configuration. Traffic moves through the local
endpoint's control route (`PUT /_local/routing`, which downloads each variant's
ModelDataUrl). The API side (what UpdateEndpoint refuses) is local_aws/sagemaker_endpoints.py.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from local_aws import alarms
from local_aws.sagemaker_runtime import EndpointUnavailable, upstream_url

log = logging.getLogger(__name__)

APPLY_TIMEOUT_SECONDS = 300.0  # downloading and loading a model on a busy machine
ALARM_CHECK_SECONDS = 1.0  # how often a deployment evaluates its rollback alarms


def show_config(endpoint: Any, config: Any) -> None:
    """DescribeEndpoint's variants of `config`, as SageMaker shows them."""
    endpoint.endpoint_config_name = config.endpoint_config_name
    endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
    shadow = getattr(config, "shadow_production_variants", None)
    if shadow:
        endpoint.shadow_production_variants = endpoint._process_production_variants(shadow)
    elif hasattr(endpoint, "shadow_production_variants"):
        del endpoint.shadow_production_variants


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
        show_config(self.endpoint, self.new_config)
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
            time.sleep(min(ALARM_CHECK_SECONDS, max(0.0, end - time.monotonic())))

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
        show_config(self.endpoint, self.old_config)
        self.endpoint.failure_reason = reason
        self._finish("InService")

    def _finish(self, status: str) -> None:
        self.endpoint.endpoint_status = status
        self.endpoint.last_modified_time = datetime.now(UTC)
