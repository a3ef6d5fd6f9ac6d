"""What a backfill costs per million photos on AWS (statemachine/backfill.asl.yml), from
what one batch uses and the dated price list of training_job/cost/model.py.

A backfill is one Standard execution holding a Distributed Map: the parent's few state
transitions, and one transition per child it starts; each child is an Express execution
(a request, and its duration rounded up to 100 ms times 64 MB: Step Functions pricing)
running one Lambda invocation that scores the batch (handlers/backfill.py): per photo one
ranged S3 GET, one endpoint request and one conditional PutItem (WRITE_UNITS_PER_PHOTO),
per batch one BatchGetItem (an eventually consistent read: half a read unit per item under
4 KB) and one log line; the listing is one LIST per 1,000 objects, the results
a few PUTs per map run. The endpoint's time is what the photos take at the measured
throughput of one instance (training_job/serving/autoscaling.py's MEASURED_MAX_RPS_PER_INSTANCE,
the number the autoscaling target is made of), billed by the instance-hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from training_job.cost.model import BYTES_PER_GB, Line, Prices
from training_job.serving.autoscaling import MEASURED_MAX_RPS_PER_INSTANCE

PHOTOS = 1_000_000
PARENT_TRANSITIONS = 4  # start, the Map state entered and exited, the end
LIST_PAGE_OBJECTS = 1000  # ListObjectsV2's page
RESULT_PUTS = 4  # the manifest and one file per status, per map run
EXPRESS_MEMORY_GB = 64 / 1024  # Express bills memory in 64-MB chunks; a child needs one
EXPRESS_DURATION_UNIT_SECONDS = 0.1
# A decision item is well under 1 KB: one unit, and one more in the review queue's index
# for the photos queued (doubtful or audit-sampled, about one in ten).
WRITE_UNITS_PER_PHOTO = 1.1
READ_UNITS_PER_PHOTO = 0.5  # BatchGetItem, eventually consistent, items under 4 KB
LOG_BYTES_PER_BATCH = 700  # Lambda's START/END/REPORT lines and the handler's one line


@dataclass(frozen=True)
class BatchUsage:
    """One batch as deployed and measured."""

    photos: int  # MaxItemsPerBatch
    lambda_seconds: float  # the scorer's duration for a batch (measured)
    lambda_memory_gb: float
    child_seconds: float  # the Express child's duration (at least the Lambda's)
    instance_type: str
    photos_per_second_per_instance: float = MEASURED_MAX_RPS_PER_INSTANCE


def backfill_cost_per_million(usage: BatchUsage, prices: Prices) -> list[Line]:
    """Each service's cost of backfilling a million photos (`monthly` and `per_million`
    are the same here: a backfill is priced by what it scores, not by the month)."""
    batches = math.ceil(PHOTOS / usage.photos)
    billed_child = (
        math.ceil(usage.child_seconds / EXPRESS_DURATION_UNIT_SECONDS)
        * EXPRESS_DURATION_UNIT_SECONDS
    )
    endpoint_hours = PHOTOS / usage.photos_per_second_per_instance / 3600
    lines = [
        Line(
            "Step Functions",
            (PARENT_TRANSITIONS + batches)
            * prices("step_functions", "standard_per_state_transition")
            + batches
            * (
                prices("step_functions", "express_per_request")
                + billed_child
                * EXPRESS_MEMORY_GB
                * prices("step_functions", "express_per_gb_second")
            ),
            f"{batches:,} Express children of {usage.photos} photos, {billed_child:.1f} s each; "
            f"{PARENT_TRANSITIONS + batches:,} parent transitions",
        ),
        Line(
            "Lambda",
            batches
            * (
                prices("lambda", "per_request")
                + usage.lambda_seconds * usage.lambda_memory_gb * prices("lambda", "per_gb_second")
            ),
            f"{batches:,} invocations of {usage.lambda_seconds:.2f} s at "
            f"{usage.lambda_memory_gb * 1024:.0f} MB",
        ),
        Line(
            "SageMaker endpoint",
            endpoint_hours * prices.instance_hour(usage.instance_type),
            f"{endpoint_hours:.2f} h of {usage.instance_type} at "
            f"{usage.photos_per_second_per_instance:g} photos/s",
        ),
        Line(
            "DynamoDB",
            PHOTOS
            * (
                WRITE_UNITS_PER_PHOTO * prices("dynamodb", "per_write_request_unit")
                + READ_UNITS_PER_PHOTO * prices("dynamodb", "per_read_request_unit")
            ),
            f"{WRITE_UNITS_PER_PHOTO:g} write and {READ_UNITS_PER_PHOTO:g} read units a photo",
        ),
        Line(
            "S3",
            PHOTOS * prices("s3", "per_get")
            + (math.ceil(PHOTOS / LIST_PAGE_OBJECTS) + RESULT_PUTS) * prices("s3", "per_put"),
            f"1 GET a photo, {math.ceil(PHOTOS / LIST_PAGE_OBJECTS):,} LIST pages",
        ),
        Line(
            "CloudWatch Logs",
            batches
            * LOG_BYTES_PER_BATCH
            / BYTES_PER_GB
            * prices("cloudwatch", "logs_per_gb_ingested"),
            f"{LOG_BYTES_PER_BATCH} bytes a batch",
        ),
    ]
    return [Line(line.service, line.monthly, line.what, line.monthly) for line in lines]
