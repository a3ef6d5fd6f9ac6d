"""The endpoint's capture spool: a request answered 200 is in the S3 capture afterwards,
whatever happens between (kill -9 of a worker or of the whole endpoint, SIGTERM under
load, S3 unreachable), exactly once; and a full spool drops records loudly, never silently.

The end-to-end scenarios are benchmarks/capture_durability.py's, at a small scale; each
starts its own local AWS and endpoint.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
import torch

from benchmarks import capture_durability
from local_aws.endpoint import metrics
from local_aws.endpoint.capture_writer import CaptureWriter, Invocation
from training_job import capture


@pytest.fixture(scope="module")
def durability_model(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[bytes]]:
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("durability-model")
    return capture_durability.prepare_model(shared_data / "cifar-100-python-vehicles.tar.gz", work)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", capture_durability.SCENARIOS)
def test_every_answered_request_is_captured_exactly_once(
    scenario: str, durability_model: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    model_dir, pngs = durability_model
    result = capture_durability.run_scenario(
        scenario, model_dir, pngs, tmp_path, total=90, clients=4, outage_seconds=3.0
    )
    assert result.answered >= 30  # the disruption came after a third had been answered
    assert result.lost == 0 and result.captured == result.answered
    assert result.duplicates == 0
    # A stop answers what it has read: never "the request body was not sent in time".
    assert "408" not in result.statuses and "500" not in result.statuses
    if scenario == "s3-outage":
        assert result.put_failures > 0  # the outage was real: uploads failed, then retried


def _invocation(number: int) -> Invocation:
    return Invocation(
        input_body=b"\x89PNG fake image " + str(number).encode(),
        input_content_type="image/png",
        output_body=b"[0.9, 0.1]",
        output_content_type="application/json",
        inference_time=datetime.now(UTC),
        inference_id=f"spool-{number}",
    )


def _captured_ids(bucket: str, endpoint_name: str) -> list[str]:
    s3 = boto3.client("s3")
    ids = []
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"data_capture/{endpoint_name}/")
    for item in listed.get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        ids += [capture.parse_line(line).inference_id or "" for line in body.splitlines()]
    return sorted(ids)


def _writer(bucket: str, spool: Path, spool_bytes: int = 10**6) -> CaptureWriter:
    slot = metrics.allocate_slots(1)[0]
    return CaptureWriter(
        bucket,
        "spool-test",
        spool_dir=spool,
        flush_seconds=3600,  # nothing is rotated by time during a test
        spool_bytes=spool_bytes,
        metrics=metrics.WorkerMetrics(slot),
    )


def test_a_record_is_on_disk_when_offer_returns(
    local_aws: dict[str, str], unique_name: str, tmp_path: Path
) -> None:
    boto3.client("s3").create_bucket(Bucket=unique_name)
    writer = _writer(unique_name, tmp_path)
    try:
        assert writer.offer(_invocation(1))
        spooled = b"".join(path.read_bytes() for path in tmp_path.glob("*.jsonl"))
        assert capture.parse_line(spooled).inference_id == "spool-1"
    finally:
        writer.close()
    assert _captured_ids(unique_name, "spool-test") == ["spool-1"]
    assert list(tmp_path.glob("*.jsonl")) == []  # deleted once S3 has it


def test_a_segment_shipped_twice_is_in_s3_once(
    local_aws: dict[str, str], unique_name: str, tmp_path: Path
) -> None:
    """A crash between the upload and the delete ships the segment again at the next
    start: the same keys are written, so each record is still there once."""
    boto3.client("s3").create_bucket(Bucket=unique_name)
    spool = tmp_path / "spool"
    first = _writer(unique_name, spool)
    for number in range(3):
        assert first.offer(_invocation(number))
    # The segment as a crash after its upload would leave it.
    (segment,) = spool.glob("*.jsonl")
    kept = tmp_path / "kept"
    shutil.copyfile(segment, kept)
    first.close()
    assert _captured_ids(unique_name, "spool-test") == ["spool-0", "spool-1", "spool-2"]
    shutil.copyfile(kept, segment)
    second = _writer(unique_name, spool)  # ships leftovers at once
    second.close()
    assert not segment.exists()
    assert _captured_ids(unique_name, "spool-test") == ["spool-0", "spool-1", "spool-2"]


def test_a_full_spool_drops_the_record_counts_it_and_says_so(
    local_aws: dict[str, str], unique_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    boto3.client("s3").create_bucket(Bucket=unique_name)
    one_record = len(
        capture.encode_lines(
            [
                capture.build_record(
                    input_body=_invocation(0).input_body,
                    input_content_type="image/png",
                    output_body=b"[0.9, 0.1]",
                    output_content_type="application/json",
                    inference_time=datetime.now(UTC),
                    inference_id="spool-0",
                )
            ]
        )
    )
    writer = _writer(unique_name, tmp_path, spool_bytes=one_record + 10)
    with caplog.at_level(logging.ERROR, logger="local_aws.endpoint.capture_writer"):
        assert writer.offer(_invocation(0))
        assert not writer.offer(_invocation(1))
    writer.close()
    rendered = metrics.render([writer.metrics.slot])
    assert "endpoint_capture_records_dropped_total 1\n" in rendered
    assert "endpoint_capture_records_spooled_total 1\n" in rendered
    assert any("capture record dropped" in record.message for record in caplog.records)
    assert _captured_ids(unique_name, "spool-test") == ["spool-0"]
