"""What a photo costs on AWS: a pure function from what the stack uses per photo (and a
month's fixed parts) and a dated price list to a table of dollars per service.

`Usage` is read from the deployed stack by `training_job/cost/cli.py`; `Prices` from a
`prices-REGION.json` file (its date, region and each service's source page in it).
Everything is per month, AWS's billing period; a month is AWS's 730 hours. Free tiers
are left out: a million photos a month is far past each of them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from training_job.serving.autoscaling import MEASURED_MAX_RPS_PER_INSTANCE

HOURS_PER_MONTH = 730  # AWS's pricing pages' month
MINUTES_PER_MONTH = HOURS_PER_MONTH * 60
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
BYTES_PER_GB = 1024**3
DEFAULT_PRICES = Path(__file__).with_name("prices-us-east-1.json")


@dataclass(frozen=True)
class Endpoint:
    """A production variant as deployed: its instance type, how many instances run, and
    its share of the requests (its weight over all the variants'). Without autoscaling
    (`target_per_instance_per_minute` None) it runs `minimum` instances."""

    instance_type: str
    minimum: int
    maximum: int
    target_per_instance_per_minute: float | None = None
    traffic_share: float = 1.0

    def instances_for(self, photos_per_minute: float) -> int:
        """What target tracking keeps for a steady rate: enough instances for each to see
        at most the target, within the scalable target's bounds."""
        if self.target_per_instance_per_minute is None:
            return self.minimum
        wanted = math.ceil(photos_per_minute / self.target_per_instance_per_minute)
        return max(self.minimum, min(self.maximum, wanted))


@dataclass(frozen=True)
class Usage:
    """What the stack uses per photo, averaged over sampled executions, and per month."""

    photos_per_month: float
    state_transitions: float
    lambda_requests: float
    lambda_gb_seconds: float
    dynamodb_write_units: float
    custom_events: float
    s3_gets: float
    s3_puts: float
    log_bytes: float
    endpoint: tuple[Endpoint, ...]  # its production variants; none: priced without it
    alarms: int = 0  # per month
    custom_metrics: int = 0  # per month
    # An Express workflow's billed GB-seconds a photo (one request each); None: Standard.
    express_gb_seconds: float | None = None


@dataclass(frozen=True)
class Line:
    """One service's dollars: in the month, and per million photos at that volume."""

    service: str
    monthly: float
    what: str
    per_million: float = 0.0


class PricesError(ValueError):
    """A prices file that cannot be used, or a price it does not have."""


@dataclass(frozen=True)
class Prices:
    region: str
    as_of: str
    services: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> Prices:
        try:
            data = json.loads(path.read_text())
            return cls(str(data["region"]), str(data["as_of"]), data)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise PricesError(f"cannot read prices from {path}: {error}") from error

    def __call__(self, service: str, item: str) -> float:
        try:
            return float(self.services[service][item])
        except (KeyError, TypeError, ValueError) as error:
            raise PricesError(f"the prices file has no {service} {item}") from error

    def instance_hour(self, instance_type: str) -> float:
        table = self.services.get("sagemaker", {}).get("real_time_per_instance_hour", {})
        if instance_type not in table:
            raise PricesError(
                f"the prices file has no real-time inference price for {instance_type} "
                f"(it has {', '.join(sorted(table))}): add it from the source page"
            )
        return float(table[instance_type])


def cost_per_million(usage: Usage, prices: Prices) -> list[Line]:
    """Each service's cost in a month of `usage.photos_per_month` photos, and per million
    photos at that volume (fixed monthly parts spread over the month's photos)."""
    millions = usage.photos_per_month / 1_000_000
    return [replace(line, per_million=line.monthly / millions) for line in _monthly(usage, prices)]


def _monthly(usage: Usage, prices: Prices) -> list[Line]:
    photos = usage.photos_per_month
    lines = [
        _workflow_line(usage, prices),
        Line(
            "Lambda",
            photos
            * (
                usage.lambda_requests * prices("lambda", "per_request")
                + usage.lambda_gb_seconds * prices("lambda", "per_gb_second")
            ),
            f"{usage.lambda_requests:g} invocations, {usage.lambda_gb_seconds:.4g} GB-s a photo",
        ),
    ]
    lines += [_endpoint_line(variant, photos, prices) for variant in usage.endpoint]
    lines += [
        Line(
            "DynamoDB",
            photos * usage.dynamodb_write_units * prices("dynamodb", "per_write_request_unit"),
            f"{usage.dynamodb_write_units:g} write request units a photo (on-demand)",
        ),
        Line(
            "EventBridge",
            photos * usage.custom_events * prices("eventbridge", "per_custom_event"),
            f"{usage.custom_events:g} custom events a photo (S3's own events are free)",
        ),
        Line(
            "S3",
            photos
            * (usage.s3_gets * prices("s3", "per_get") + usage.s3_puts * prices("s3", "per_put")),
            f"{usage.s3_gets:g} GET, {usage.s3_puts:g} PUT a photo",
        ),
        Line(
            "CloudWatch Logs",
            photos * usage.log_bytes / BYTES_PER_GB * prices("cloudwatch", "logs_per_gb_ingested"),
            f"{usage.log_bytes:,.0f} bytes ingested a photo",
        ),
        Line(
            "CloudWatch metrics, alarms",
            usage.custom_metrics * prices("cloudwatch", "per_custom_metric_month")
            + usage.alarms * prices("cloudwatch", "per_alarm_month"),
            f"{usage.custom_metrics} custom metrics, {usage.alarms} alarms (a month, any volume)",
        ),
    ]
    return lines


def _workflow_line(usage: Usage, prices: Prices) -> Line:
    """Standard: each state transition. Express: each execution (a request), and its
    billed duration times its billed memory in GB-seconds (Step Functions pricing)."""
    photos = usage.photos_per_month
    if usage.express_gb_seconds is None:
        return Line(
            "Step Functions",
            photos
            * usage.state_transitions
            * prices("step_functions", "standard_per_state_transition"),
            f"{usage.state_transitions:g} state transitions a photo (Standard)",
        )
    return Line(
        "Step Functions",
        photos
        * (
            prices("step_functions", "express_per_request")
            + usage.express_gb_seconds * prices("step_functions", "express_per_gb_second")
        ),
        f"1 request, {usage.express_gb_seconds:.4g} GB-s a photo (Express: 64 MB x billed "
        "duration)",
    )


def _endpoint_line(endpoint: Endpoint, photos: float, prices: Prices) -> Line:
    per_minute = photos * endpoint.traffic_share / MINUTES_PER_MONTH
    instances = endpoint.instances_for(per_minute)
    monthly = instances * HOURS_PER_MONTH * prices.instance_hour(endpoint.instance_type)
    what = f"{instances} x {endpoint.instance_type} all month ({per_minute:,.0f} photos/min"
    if endpoint.target_per_instance_per_minute is not None:
        what += f", target {endpoint.target_per_instance_per_minute:,.0f}/instance/min"
    what += ")"
    # Past the measured throughput the instances cannot keep up, whatever the bill says.
    if per_minute > instances * MEASURED_MAX_RPS_PER_INSTANCE * 60:
        what += f"; over {MEASURED_MAX_RPS_PER_INSTANCE:g} req/s per instance: saturated"
    return Line("SageMaker endpoint", monthly, what)
