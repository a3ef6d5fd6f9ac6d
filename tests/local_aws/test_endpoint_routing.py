"""The local endpoint's routing document (local_aws/endpoint/routing.py) and how the local
AWS turns a deployment into routings (local_aws/endpoint_deployment.py, and the checks of
local_aws/sagemaker_endpoints.py): pure functions, no servers. The live behaviour:
tests/training_job/serving/test_rollout.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from moto.sagemaker.exceptions import ValidationError

from local_aws import endpoint_deployment, sagemaker_endpoints
from local_aws.endpoint import routing
from local_aws.endpoint.metrics import MAX_VARIANTS, allocate_slots, variant_counters

ROUTE = {"variant": "v1", "model_dir": "/m", "weight": 1.0}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "JSON object"),
        ({"routes": []}, "1 to 10"),
        ({"routes": [ROUTE] * 11}, "1 to 10"),
        ({"routes": [{**ROUTE, "variant": "v 1"}]}, "variant name"),
        ({"routes": [{**ROUTE, "variant": "x" * 64}]}, "variant name"),
        ({"routes": [{**ROUTE, "weight": -1}]}, "weight"),
        ({"routes": [{**ROUTE, "weight": True}]}, "weight"),
        ({"routes": [{**ROUTE, "weight": "NaN"}]}, "weight"),
        ({"routes": [{**ROUTE, "weight": 0}]}, "all be 0"),
        ({"routes": [{**ROUTE, "model_dir": ""}]}, "model_dir"),
        ({"routes": [ROUTE], "shadow": ROUTE}, "also a production variant"),
        ({"routes": [ROUTE], "shadow": "v2"}, "must be an object"),
    ],
)
def test_a_routing_that_cannot_be_served_is_refused(document: Any, message: str) -> None:
    with pytest.raises(routing.RoutingError, match=message):
        routing.parse(document)


def test_new_variants_take_counter_positions_and_reuse_the_oldest_unused_one(
    tmp_path: Path,
) -> None:
    slots = allocate_slots(2)
    routing.write_initial(tmp_path, "v1", Path("/m1"))
    for version in range(2, MAX_VARIANTS + 1):
        current = routing.replace(
            tmp_path, [routing.Route(f"v{version}", f"/m{version}")], None, slots
        )
    assert current.positions == tuple(f"v{n}" for n in range(1, MAX_VARIANTS + 1))
    slots[1][-1] = 5.0  # a count in the last position's block
    current = routing.replace(
        tmp_path,
        [routing.Route("v1", "/m1"), routing.Route("v99", "/m99", 0.5)],
        routing.Route("v8", "/m8"),
        slots,
    )
    assert current.generation == MAX_VARIANTS
    assert current.positions[1] == "v99"  # v2's block, the first no variant uses
    assert routing.read(tmp_path) == current
    assert variant_counters(slots, 1)["invocations"] == 0


def _fleet(*routes: tuple[str, float]) -> endpoint_deployment.Fleet:
    return endpoint_deployment.Fleet(
        [
            {"variant": name, "model_data": f"s3://b/{name}", "weight": weight}
            for name, weight in routes
        ],
        None,
    )


def test_a_canary_share_splits_each_fleet_by_its_own_weights() -> None:
    old, new = _fleet(("v1", 1.0), ("v2", 0.0)), _fleet(("v1", 0.0), ("v2", 3.0))
    mixed = endpoint_deployment.mixed(old, new, 0.2)
    assert [(r["variant"], r["model_data"], round(r["weight"], 6)) for r in mixed["routes"]] == [
        ("v1", "s3://b/v1", 0.8),
        ("v2", "s3://b/v2", 0.2),
    ]
    # All on the new fleet: its weight-0 variant stays deployed (see the next test).
    assert endpoint_deployment.mixed(old, new, 1.0)["routes"] == [
        {"variant": "v1", "model_data": "s3://b/v1", "weight": 0.0},
        {"variant": "v2", "model_data": "s3://b/v2", "weight": 1.0},
    ]


def test_a_configuration_applied_whole_keeps_its_weight_0_variants() -> None:
    """SageMaker API reference, runtime InvokeEndpoint: TargetVariant "overrides the
    default behavior for the endpoint, which is to distribute the invocation traffic based
    on the variant weights": a weight-0 production variant gets no share of the traffic,
    yet it is deployed with its instances and answers when targeted. So a rollout's
    prepare stage (new version at weight 0) loads the new model, as on AWS, and a model
    that cannot be loaded fails that update there, not in the canary."""
    serving, prepare = _fleet(("v1", 1.0)), _fleet(("v1", 1.0), ("v4", 0.0))
    assert endpoint_deployment.mixed(serving, prepare, 1.0)["routes"] == [
        {"variant": "v1", "model_data": "s3://b/v1", "weight": 1.0},
        {"variant": "v4", "model_data": "s3://b/v4", "weight": 0.0},
    ]


def _policy(kind: str, **routing_config: Any) -> dict[str, Any]:
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": kind,
                "WaitIntervalInSeconds": 1,
                **routing_config,
            }
        }
    }


def test_traffic_steps_follow_canary_linear_and_all_at_once() -> None:
    config = SimpleNamespace(
        production_variants=[{"InitialInstanceCount": 2}, {"InitialInstanceCount": 2}]
    )
    canary = _policy("CANARY", CanarySize={"Type": "CAPACITY_PERCENT", "Value": 10})
    assert endpoint_deployment.traffic_steps(canary, config) == [0.1, 1.0]
    by_instance = _policy("CANARY", CanarySize={"Type": "INSTANCE_COUNT", "Value": 1})
    assert endpoint_deployment.traffic_steps(by_instance, config) == [0.25, 1.0]
    linear = _policy("LINEAR", LinearStepSize={"Type": "CAPACITY_PERCENT", "Value": 40})
    assert endpoint_deployment.traffic_steps(linear, config) == pytest.approx([0.4, 0.8, 1.0])
    assert endpoint_deployment.traffic_steps(_policy("ALL_AT_ONCE"), config) == [1.0]


@pytest.mark.parametrize(
    ("instances", "size", "accepted"),
    [
        ([1], {"Type": "CAPACITY_PERCENT", "Value": 10}, False),  # one instance is 100%
        ([2], {"Type": "CAPACITY_PERCENT", "Value": 10}, True),  # one of two: 50%
        ([2], {"Type": "CAPACITY_PERCENT", "Value": 50}, True),
        ([3], {"Type": "CAPACITY_PERCENT", "Value": 50}, False),  # rounded up: 2 of 3
        ([4], {"Type": "INSTANCE_COUNT", "Value": 2}, True),
        ([4], {"Type": "INSTANCE_COUNT", "Value": 3}, False),
        ([1, 2], {"Type": "INSTANCE_COUNT", "Value": 1}, True),  # the weighted variants' 3
    ],
)
def test_a_canary_is_at_most_half_the_variants_instances(
    instances: list[int], size: dict[str, Any], accepted: bool
) -> None:
    """SageMaker API reference, TrafficRoutingConfig: CanarySize "must be less than or
    equal to 50% of the variant's total instance count"."""
    config = SimpleNamespace(
        production_variants=[{"InitialInstanceCount": count} for count in instances]
        + [{"InitialInstanceCount": 5, "InitialVariantWeight": 0.0}]  # takes no traffic
    )
    deployment = _policy("CANARY", CanarySize=size)
    if accepted:
        sagemaker_endpoints.check_traffic_sizes(deployment, config)
    else:
        with pytest.raises(ValidationError, match="50% of the variant's total instance count"):
            sagemaker_endpoints.check_traffic_sizes(deployment, config)


@pytest.mark.parametrize(("percent", "accepted"), [(5, False), (10, True), (50, True), (60, False)])
def test_a_linear_step_is_10_to_50_percent_of_the_variants_instances(
    percent: int, accepted: bool
) -> None:
    """SageMaker API reference, TrafficRoutingConfig: LinearStepSize "must be 10-50% of
    the variant's total instance count"."""
    config = SimpleNamespace(production_variants=[{"InitialInstanceCount": 10}])
    deployment = _policy("LINEAR", LinearStepSize={"Type": "CAPACITY_PERCENT", "Value": percent})
    if accepted:
        sagemaker_endpoints.check_traffic_sizes(deployment, config)
    else:
        with pytest.raises(ValidationError, match="must be 10-50% of the variant's total"):
            sagemaker_endpoints.check_traffic_sizes(deployment, config)
