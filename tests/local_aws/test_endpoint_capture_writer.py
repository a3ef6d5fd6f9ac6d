"""local_aws/endpoint/capture_writer.py through the served endpoint (`deploy --mode
local`): sampled requests reach the local S3 as SageMaker writes them, after a clean
stop all of them, after kill -9 all but the last flush interval."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import requests

from tests.local_aws.endpoint_helpers import (
    Model,
    captured_records,
    deploy,
    post,
    start,
    stop,
)


def test_sampled_requests_are_all_in_the_bucket_after_sigterm(model: Model, tmp_path: Path) -> None:
    captured = start(model, tmp_path, "captured", "--capture-flush-seconds", "60")
    sent = model.pngs[:25]
    answers = []
    for index, png in enumerate(sent):
        response = requests.post(
            f"{captured.url}/endpoints/captured/invocations",
            data=png,
            headers={"Content-Type": "image/png", "X-Amzn-SageMaker-Inference-Id": f"id-{index}"},
            timeout=30,
        )
        assert response.status_code == 200
        answers.append(response.json())
    # The flush interval is a minute: only the clean shutdown can have written them.
    stop(captured)
    records = captured_records(model.bucket, "captured")
    assert len(records) == len(sent)
    by_id = {record.inference_id: record for record in records}
    for index, png in enumerate(sent):
        record = by_id[f"id-{index}"]
        assert record.input.content_type == "image/png"
        assert record.input.encoding == "BASE64" and record.input.body() == png
        assert record.output.encoding == "JSON"
        assert record.output.content_type == "application/json"
        assert json.loads(record.output.body()) == answers[index]


def test_sampling_zero_writes_no_capture(model: Model, tmp_path: Path) -> None:
    silent = start(model, tmp_path, "silent", "--capture-sampling", "0")
    try:
        for png in model.pngs[:10]:
            assert post(silent.url, png).status_code == 200
    finally:
        stop(silent)
    assert captured_records(model.bucket, "silent") == []


def test_kill_9_loses_at_most_the_last_flush_interval_and_never_breaks_a_line(
    model: Model,
    tmp_path: Path,
) -> None:
    killed = start(model, tmp_path, "killed", "--capture-flush-seconds", "0.5")
    supervisor = int((tmp_path / "killed.pid").read_text())
    try:
        for png in model.pngs[:10]:
            assert post(killed.url, png).status_code == 200
        deadline = time.monotonic() + 60
        while len(captured_records(model.bucket, "killed")) < 10:  # the first ten are shipped
            assert time.monotonic() < deadline, "the first ten captures never reached S3"
            time.sleep(0.2)
        for png in model.pngs[10:15]:
            assert post(killed.url, png).status_code == 200
    finally:
        os.killpg(supervisor, signal.SIGKILL)  # the whole process group, workers included
    records = captured_records(model.bucket, "killed")  # every line of every object parses
    assert 10 <= len(records) <= 15
    stopped = deploy(
        "--endpoint-name", killed.name, "--state-dir", str(tmp_path),
        "--parameter-name", killed.parameter, "--stop",
    )  # fmt: skip
    assert stopped.returncode == 0 and "not running" in stopped.stdout  # its pid file goes
    assert not (tmp_path / "killed.pid").exists()
