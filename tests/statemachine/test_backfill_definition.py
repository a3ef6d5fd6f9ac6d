"""The backfill's definition (statemachine/backfill.asl.yml) as written, read without the
Serverless CLI: the Distributed Map the design names, and the live path's first-write
rule shared with the batch scorer through contract/decisions.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from contract.decisions import FIRST_WRITE_CONDITION
from local_aws.distributed_map import check

STATEMACHINE = Path(__file__).resolve().parents[2] / "statemachine"


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((STATEMACHINE / name).read_text())
    return document


def test_the_backfill_is_one_distributed_map_over_the_listing_with_express_children() -> None:
    """ "Using Map state in Distributed mode" (Step Functions developer guide): ItemReader
    `s3:listObjectsV2`, ItemBatcher, ExecutionType EXPRESS children, ResultWriter."""
    state = load("backfill.asl.yml")["States"]["ScorePhotos"]
    check(state)  # the rules the local AWS holds a Distributed Map to (AWS's)
    assert state["ItemReader"]["Resource"] == "arn:aws:states:::s3:listObjectsV2"
    assert state["ItemProcessor"]["ProcessorConfig"] == {
        "Mode": "DISTRIBUTED",
        "ExecutionType": "EXPRESS",
    }
    assert state["ItemBatcher"]["MaxItemsPerBatch"] <= 100  # one BatchGetItem a batch
    assert state["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"
    assert 0 < state["ToleratedFailurePercentage"] < 100


def test_the_image_workflow_writes_a_first_decision_under_the_contracts_condition() -> None:
    """The batch scorer writes with contract.decisions.FIRST_WRITE_CONDITION: the image
    workflow's writes must be the same rule, or a photo could be decided by both."""
    states = load("image_workflow.asl.yml")["States"]
    writes = ("RecordDecision", "RecordAuditedDecision", "QueueForReview", "RecordRejection")
    for name in writes:
        assert states[name]["Parameters"]["ConditionExpression"] == FIRST_WRITE_CONDITION, name
