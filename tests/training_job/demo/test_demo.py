"""The main job, reduced (one epoch), end to end on a fresh local AWS: stage, train,
deploy the endpoint and the stack, run the workflow on every test image, send a drifted
batch, report, roll out a second version, and stop everything."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.conftest import REPO_ROOT, SHARED_ARCHIVE, free_port
from tests.training_job.registry_helpers import register_output
from training_job.demo.run import Demo
from training_job.models import registry


@pytest.mark.slow  # starts the demo: a local AWS, training, an endpoint
def test_the_demo_runs_end_to_end_and_stops_what_it_started(
    shared_data: Path, tmp_path: Path
) -> None:
    port = free_port()
    state = tmp_path / "state"
    environment = {**os.environ, "SCONES_CIFAR_SOURCE": str(SHARED_ARCHIVE)}
    for name in [name for name in environment if name.startswith("AWS_")]:
        del environment[name]  # the demo must set up its own local AWS, not reuse ours
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training_job.demo",
            "--state-dir",
            str(state),
            "--port",
            str(port),
            "--endpoint-port",
            str(free_port()),
            "--epochs",
            "1",
            "--bucket",
            "demo-test-bucket",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    printed = result.stdout.split("==> summary", 1)[1]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert f"{summary['test_accuracy']:.3f}" in printed
    # The trained model became a registry version, approved before it was deployed.
    assert "PendingManualApproval -> Approved" in result.stdout
    assert summary["model_version"] >= 1
    assert 0.5 <= summary["test_accuracy"] <= 1.0
    # Every test image went through the workflow: passed the gate or stopped by it, as
    # doubtful or as unfamiliar (the familiarity check calls about 5 % of ordinary photos
    # unfamiliar: its calibration).
    assert summary["executions"] == 200
    assert summary["passed"] + summary["stopped_by_threshold"] + summary["unfamiliar"] == 200
    assert summary["unfamiliar"] < 200 // 4
    assert summary["endpoint_requests_per_second"] > 0
    # The drifted batch (camera noise) is the last window; the monitor flags it.
    assert summary["monitoring_windows"] >= 2
    assert summary["alerting_windows"] >= 1
    assert Path(summary["report"]).is_file()
    # Every photo ends in one decision; the scripted reviewer empties the review queue.
    decisions = summary["decisions"]
    assert decisions["routed"] + decisions["needs_review"] == 200
    assert decisions["needs_review"] == summary["stopped_by_threshold"] + summary["unfamiliar"]
    assert summary["review"]["queue_before"] == decisions["review_queue"]
    assert summary["review"]["queue_after"] == 0
    # Accuracy past the gate from the audit sample: people's answers in the decisions table.
    assert "from the audit" in printed
    assert summary["audit"]["all"]["accuracy_past_gate"]["n"] == decisions["audited"]
    # It ends by registering the same model again as version 2, approving it and rolling
    # it out under load onto the endpoint that still serves version 1: every stage
    # printed, every request answered.
    assert summary["rollout"]["model_version"] == summary["model_version"] + 1
    second = f"v{summary['rollout']['model_version']}"
    first = f"v{summary['model_version']}"
    for stage in ("shadow:", "prepare:", "canary:", f"all: {second} serves all traffic"):
        assert stage in result.stdout, stage
    assert f"serves {first} (" in result.stdout  # the rollout found the first deploy's
    assert summary["rollout"]["exit_status"] == 0
    answers = summary["rollout"]["answers"]
    assert answers.get(second, 0) > 0 and answers.get(first, 0) > 0
    assert not [k for k in answers if k.startswith("failed")]
    assert result.stdout.count("training_job deploy --mode local --bucket") == 1
    assert not (state / "aws.pid").exists(), "the demo left the local AWS running"


def test_the_demo_approves_the_version_its_training_job_became(
    local_aws: dict[str, str], unique_name: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """The demo's approval step, on its own: the newest version of the job it trained is
    approved (with the demo's reason), and deploy's choice is that version."""
    boto3.client("s3").create_bucket(Bucket=unique_name)
    job = f"scones-pytorch-demo-{unique_name}"
    register_output(unique_name, f"other-{unique_name}", registry.DEFAULT_GROUP)
    ours = register_output(unique_name, job, registry.DEFAULT_GROUP)
    version = Demo(bucket=unique_name).approve(job, {"test_accuracy": 0.9512})
    assert version == ours.version
    sm = boto3.client("sagemaker")
    approved = registry.newest_approved(sm, registry.DEFAULT_GROUP)
    assert (approved.version, approved.approval_description) == (
        ours.version,
        "approved by the demo: test accuracy 0.9512",
    )
    out = capfd.readouterr().out
    assert "PendingManualApproval -> Approved" in out
    assert "models list" in out  # it showed the versions side by side first


@pytest.mark.slow  # starts the demo's local AWS
def test_a_failing_step_ends_the_demo_with_one_line_naming_it_and_no_traceback(
    tmp_path: Path,
) -> None:
    """Offline without SCONES_CIFAR_SOURCE (here: a source that is not there), staging
    fails: its own error, then the demo's line, exit status 1, and no local AWS left."""
    state = tmp_path / "state"
    environment = {**os.environ, "SCONES_CIFAR_SOURCE": str(tmp_path / "no-archive.tar.gz")}
    for name in [name for name in environment if name.startswith("AWS_")]:
        del environment[name]
    result = subprocess.run(
        [
            *(sys.executable, "-m", "training_job.demo", "--state-dir", str(state)),
            *("--port", str(free_port()), "--endpoint-port", str(free_port())),
            *("--bucket", "demo-fail-bucket", "--out", str(tmp_path / "out")),
        ],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "demo stopped at 'stage the data'" in result.stderr
    assert "training_job stage" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert not (state / "aws.pid").exists(), "the demo left the local AWS running"
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.slow  # runs the demo command, which stops before its local AWS here (4 s)
def test_a_taken_port_ends_the_demo_with_one_line_naming_its_holder(tmp_path: Path) -> None:
    """`make demo` while another program listens on the local AWS's port (and answers no
    HTTP): one line saying the port is held and by whom, exit status 1, no traceback."""
    state = tmp_path / "state"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        result = subprocess.run(
            [
                *(sys.executable, "-m", "training_job.demo", "--state-dir", str(state)),
                *("--port", str(port), "--endpoint-port", str(free_port())),
                *("--bucket", "demo-port-bucket", "--out", str(tmp_path / "out")),
            ],
            cwd=REPO_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "demo stopped at 'start the local AWS'" in line
    assert f"127.0.0.1:{port}" in line and f"pid {os.getpid()}" in line
    assert not (state / "aws.pid").exists()
