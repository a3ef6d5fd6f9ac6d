"""The backfill's cost per million photos, against a hand-computed case with the dated
prices (training_job/cost/prices-us-east-1.json)."""

from __future__ import annotations

import pytest

from training_job.cost.backfill import BatchUsage, backfill_cost_per_million
from training_job.cost.model import DEFAULT_PRICES, Prices

GOAL_PER_MILLION = 2.0  # issue 25: a backfill at most $2 per million photos


def test_a_million_photos_in_batches_of_100_costs_what_the_price_list_says() -> None:
    usage = BatchUsage(
        photos=100,
        lambda_seconds=4.0,
        lambda_memory_gb=0.25,
        child_seconds=4.05,  # billed as 4.1 s
        instance_type="ml.m5.xlarge",
        photos_per_second_per_instance=250.0,
    )
    lines = {
        line.service: line.per_million
        for line in backfill_cost_per_million(usage, Prices.read(DEFAULT_PRICES))
    }
    # 10,000 children: 10,004 transitions at $0.000025, 10,000 requests at $0.000001,
    # 10,000 x 4.1 s x 1/16 GB at $0.00001667 a GB-second.
    assert lines["Step Functions"] == pytest.approx(
        10_004 * 0.000025 + 10_000 * 0.000001 + 10_000 * 4.1 / 16 * 0.00001667
    )
    assert lines["Lambda"] == pytest.approx(10_000 * (0.0000002 + 4.0 * 0.25 * 0.0000166667))
    # 1,000,000 / 250 photos/s = 4,000 s = 1.111 h of ml.m5.xlarge at $0.23.
    assert lines["SageMaker endpoint"] == pytest.approx(4000 / 3600 * 0.23)
    # 1.1 write units a photo (the item, the review queue's index for a tenth of them).
    assert lines["DynamoDB"] == pytest.approx(1_000_000 * (1.1 * 0.000000625 + 0.5 * 0.000000125))
    assert lines["S3"] == pytest.approx(1_000_000 * 0.0000004 + 1004 * 0.000005)
    assert sum(lines.values()) < GOAL_PER_MILLION
