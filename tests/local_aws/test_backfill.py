"""`python -m training_job backfill` against the packaged backfill (its state machine, the
batch scorer and their roles, made in the local AWS by the `workflow` fixture), with the
scripted endpoint of conftest.py (even-sized bodies confident, odd-sized doubtful).

Nothing lost, nothing decided twice: every photo under the prefix ends in a decision or
a named failure in the results file, and a backfill run again, or stopped midway and
started again, leaves each photo's first decision as it was.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from contract.backfill import BACKFILL_ATTRIBUTE
from contract.decisions import REASON_UNFAMILIAR, STATUS_NEEDS_REVIEW
from tests import non_vehicle_photos
from tests.handlers.conftest import encode_image
from tests.local_aws.rendered_workflow import Workflow
from tests.sample_model import png_bytes
from training_job.__main__ import main
from training_job.environment import overridden

pytestmark = pytest.mark.timeout(600)


def image(confident: bool) -> bytes:
    """A real PNG whose size the scripted endpoint answers confidently (even) or not."""
    data = encode_image("PNG", (16, 16))
    return data if (len(data) % 2 == 0) == confident else data + b"\0"


def upload(workflow: Workflow, prefix: str, photos: dict[str, bytes]) -> None:
    s3 = workflow.aws.client("s3")
    for name, body in photos.items():
        s3.put_object(Bucket=workflow.bucket, Key=f"{prefix}{name}", Body=body)


def backfill(workflow: Workflow, prefix: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    """The command's exit status and its JSON summary, run in this process."""
    out = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    argv = ["backfill", "--images", f"s3://{workflow.bucket}/{prefix}", "--results", str(out)]
    with overridden(workflow.aws.environment):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            status = main([*argv, "--json", "--region", "us-east-1", *extra])
    summary: dict[str, Any] = json.loads(printed.getvalue())
    summary["exit_status"] = status
    summary["rows"] = [json.loads(line) for line in out.read_text().splitlines()]
    return summary


def decisions(workflow: Workflow, prefix: str) -> dict[str, dict[str, Any]]:
    """The decisions of the photos under `prefix`, by S3 key."""
    table = workflow.environments["BackfillRole"]["DECISIONS_TABLE"]
    pages = workflow.aws.client("dynamodb").get_paginator("scan").paginate(TableName=table)
    found = {}
    for page in pages:
        for item in page["Items"]:
            location = item["image"]["S"].rpartition("#")[0]
            if location.startswith(f"s3://{workflow.bucket}/{prefix}"):
                key = location.removeprefix(f"s3://{workflow.bucket}/")
                found[key] = {name: next(iter(value.values())) for name, value in item.items()}
    return found


def test_every_photo_ends_in_a_decision_named_in_the_results_file(
    workflow: Workflow, tmp_path: Path
) -> None:
    prefix = f"archive/bf-{uuid.uuid4().hex}/"
    photos = {f"c{i}.png": image(True) for i in range(3)}
    photos |= {f"d{i}.png": image(False) for i in range(2)}
    photos["note.png"] = b"not an image at all"
    upload(workflow, prefix, photos)

    summary = backfill(workflow, prefix, tmp_path)

    assert summary["exit_status"] == 0, summary
    assert summary["outcomes"] == {
        "routed": 3, "needs_review": 2, "rejected": 1, "already_decided": 0, "failed": 0,
    }  # fmt: skip
    by_key = {row["key"]: row for row in summary["rows"]}
    assert sorted(by_key) == sorted(f"{prefix}{name}" for name in photos)
    assert by_key[f"{prefix}note.png"]["error"] == "NotAnImage"
    stored = decisions(workflow, prefix)
    assert {key: item["status"] for key, item in stored.items()} == {
        key: row["outcome"] for key, row in by_key.items()
    }
    assert {item[BACKFILL_ATTRIBUTE] for item in stored.values()} == {summary["backfill"]}
    assert all("event_pending" not in item for item in stored.values())  # no routing event
    s3_copy = (
        workflow.aws.client("s3")
        .get_object(Bucket=workflow.bucket, Key=summary["results"].split("/", 3)[3])["Body"]
        .read()
    )
    assert [json.loads(line) for line in s3_copy.decode().splitlines()] == summary["rows"]


def test_an_unfamiliar_photo_in_a_backfill_is_queued_never_routed(
    workflow: Workflow, tmp_path: Path
) -> None:
    """Issue 23's third outcome holds for the backfill as for the live workflow: a real
    non-vehicle photo (a night sky) that the endpoint answers confidently but calls
    unfamiliar in its CustomAttributes is queued with the reason `unfamiliar` and its
    familiarity, never routed."""
    prefix = f"archive/bf-{uuid.uuid4().hex}/"
    night_sky = non_vehicle_photos.procedural(8)[7]  # the families in turn: the 8th
    upload(workflow, prefix, {"sky.png": png_bytes(night_sky), "bike.png": image(True)})

    summary = backfill(workflow, prefix, tmp_path)

    assert summary["exit_status"] == 0, summary
    assert summary["outcomes"]["routed"] == 1
    assert summary["outcomes"]["needs_review"] == 1
    sky = decisions(workflow, prefix)[f"{prefix}sky.png"]
    assert sky["status"] == STATUS_NEEDS_REVIEW
    assert sky["review_reason"] == REASON_UNFAMILIAR
    assert float(sky["familiarity"]) == pytest.approx(0.0099)


def test_a_photo_overwritten_after_its_listing_is_not_scored_as_the_old_version(
    workflow: Workflow, tmp_path: Path
) -> None:
    """An object overwritten between the map's listing and its batch: the scorer reads with
    If-Match on the listed ETag, so the old version's decision is `rejected` with
    ImageChanged (never the new bytes' answer under the old version's id), and the next
    backfill of the prefix scores the new version."""
    prefix = f"archive/bf-{uuid.uuid4().hex}/"
    key = f"{prefix}p.png"
    upload(workflow, prefix, {"p.png": image(True)})
    s3 = workflow.aws.client("s3")
    listed = s3.head_object(Bucket=workflow.bucket, Key=key)["ETag"]
    upload(workflow, prefix, {"p.png": image(False)})  # overwritten after the listing
    batch = {
        "Items": [{"Key": key, "Etag": listed}],
        "BatchInput": {
            "bucket": workflow.bucket,
            "backfill": "overwritten",
            "execution": f"arn:aws:states:us-east-1:123456789012:execution:bf:{uuid.uuid4().hex}",
            "target_variant": "",
            "redecide": False,
        },
    }
    response = workflow.aws.client("lambda").invoke(
        FunctionName=workflow.functions["BackfillRole"], Payload=json.dumps(batch).encode()
    )
    assert "FunctionError" not in response
    [photo] = json.loads(response["Payload"].read())["photos"]
    assert (photo["outcome"], photo["error"]) == ("rejected", "ImageChanged")

    summary = backfill(workflow, prefix, tmp_path)

    assert summary["exit_status"] == 0, summary
    [row] = summary["rows"]
    assert row["etag"] != listed.strip('"')
    assert row["outcome"] == "needs_review"  # the new bytes' own (doubtful) answer


def test_a_backfill_run_again_decides_nothing_twice(workflow: Workflow, tmp_path: Path) -> None:
    prefix = f"archive/bf-{uuid.uuid4().hex}/"
    upload(workflow, prefix, {f"p{i}.png": image(i % 2 == 0) for i in range(4)})
    first = backfill(workflow, prefix, tmp_path)
    before = decisions(workflow, prefix)

    again = backfill(workflow, prefix, tmp_path)

    assert first["exit_status"] == again["exit_status"] == 0
    assert again["outcomes"]["already_decided"] == 4
    assert decisions(workflow, prefix) == before


def test_redecide_replaces_the_models_decisions_and_keeps_a_persons_answer(
    workflow: Workflow, tmp_path: Path
) -> None:
    prefix = f"archive/bf-{uuid.uuid4().hex}/"
    upload(workflow, prefix, {f"p{i}.png": image(True) for i in range(3)})
    first = backfill(workflow, prefix, tmp_path)
    answered = f"{prefix}p0.png"
    table = workflow.environments["BackfillRole"]["DECISIONS_TABLE"]
    image_id = next(row["image"] for row in first["rows"] if row["key"] == answered)
    workflow.aws.client("dynamodb").update_item(  # a person's answer, as the review writes it
        TableName=table,
        Key={"image": {"S": image_id}},
        UpdateExpression="SET #source = :person, #status = :reviewed, #revision = :one",
        ExpressionAttributeNames={
            "#source": "source", "#status": "status", "#revision": "revision",
        },
        ExpressionAttributeValues={
            ":person": {"S": "person"}, ":reviewed": {"S": "reviewed"}, ":one": {"N": "1"},
        },
    )  # fmt: skip

    again = backfill(workflow, prefix, tmp_path, "--redecide")

    assert again["outcomes"]["routed"] == 2 and again["outcomes"]["already_decided"] == 1
    stored = decisions(workflow, prefix)
    assert stored[answered]["source"] == "person" and stored[answered]["revision"] == "1"
    for key in (f"{prefix}p1.png", f"{prefix}p2.png"):
        assert stored[key][BACKFILL_ATTRIBUTE] == again["backfill"]
        assert stored[key]["revision"] == "1"  # bumped, as every write after the first


def test_a_backfill_stopped_midway_and_restarted_decides_each_photo_once(
    workflow: Workflow, tmp_path: Path
) -> None:
    """The packaged definition with batches of 10 run one at a time, so a stop lands
    between batches: the photos decided before it keep their decisions, the rest are
    decided by the second run, and no photo is decided by both."""
    sfn = workflow.aws.client("stepfunctions")
    packaged = sfn.describe_state_machine(stateMachineArn=workflow.backfill_arn)["definition"]
    slow = json.loads(packaged)
    slow["States"]["ScorePhotos"].update(MaxConcurrency=1, ItemBatcher={
        **slow["States"]["ScorePhotos"]["ItemBatcher"], "MaxItemsPerBatch": 10,
    })  # fmt: skip
    prefix = f"archive/bf-{uuid.uuid4().hex}/"
    upload(workflow, prefix, {f"p{i:02d}.png": image(True) for i in range(40)})
    sfn.update_state_machine(stateMachineArn=workflow.backfill_arn, definition=json.dumps(slow))
    try:
        started = sfn.start_execution(
            stateMachineArn=workflow.backfill_arn,
            input=json.dumps({"prefix": prefix, "target_variant": "", "redecide": False}),
        )
        deadline = time.monotonic() + 120
        while not decisions(workflow, prefix):
            assert time.monotonic() < deadline, "no photo decided"
            time.sleep(0.1)
        sfn.stop_execution(executionArn=started["executionArn"])
        while sfn.describe_execution(executionArn=started["executionArn"])["status"] == "RUNNING":
            time.sleep(0.2)
        time.sleep(5)  # a batch's Lambda that was running finishes its writes
    finally:
        sfn.update_state_machine(stateMachineArn=workflow.backfill_arn, definition=packaged)
    decided_first = decisions(workflow, prefix)
    assert 0 < len(decided_first) < 40, len(decided_first)

    restarted = backfill(workflow, prefix, tmp_path)

    assert restarted["exit_status"] == 0, restarted
    assert restarted["outcomes"]["already_decided"] == len(decided_first)
    assert restarted["outcomes"]["routed"] == 40 - len(decided_first)
    final = decisions(workflow, prefix)
    assert len(final) == 40
    for key, item in decided_first.items():
        assert final[key] == item  # the first decision stands, unchanged
    assert {final[k][BACKFILL_ATTRIBUTE] for k in final if k not in decided_first} == {
        restarted["backfill"]
    }


@pytest.mark.parametrize(
    ("images", "message"),
    [("not-s3", "not an s3:// URI"), ("s3://some-bucket/", "name a prefix")],
)
def test_a_location_that_names_no_prefix_is_a_usage_error(
    images: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backfill", "--images", images, "--region", "us-east-1"]) == 2
    assert message in capsys.readouterr().err
