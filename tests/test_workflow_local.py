"""The real project end to end on a fresh local AWS: staged data, a trained model behind the
local endpoint, the real serverless.yml deployed with `sls deploy`, and the workflow run
through `sls invoke stepf`, the S3 trigger and `training_job evaluate`.

Everything here is started by this module and stopped by its fixtures: the local AWS
(`python -m local_aws serve`, which carries `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME` so the
deployed classify handler reaches the endpoint) and the local endpoint
(`training_job deploy --mode local`, stopped with `--stop`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from contract.decisions import (
    DEFAULT_AUDIT_RATE,
    EVENT_DETAIL_TYPE,
    EVENT_SOURCE,
    REASON_AUDIT,
    REASON_DOUBTFUL,
    REVIEW_INDEX,
    REVIEW_PENDING,
    SOURCE_MODEL,
    STATUS_NEEDS_REVIEW,
    STATUS_ROUTED,
    image_id,
    version_of_variant,
)
from contract.manifest import parse_lst
from handlers.threshold_filter import in_audit_sample
from local_aws.server import (
    endpoint_url,
    local_aws_server,
    local_client,
    without_aws_variables,
)
from tests.conftest import REPO_ROOT, free_port
from training_job.demo.sagemaker_role import create_sagemaker_role
from training_job.review.table import table_definition
from training_job.serving import autoscaling

pytestmark = pytest.mark.timeout(300)

# Not us-east-1, AWS's default and the one region where S3 needs no LocationConstraint: every
# process here gets it (AWS_REGION, AWS_DEFAULT_REGION) and sls gets `--region`.
REGION = "ap-southeast-2"
STAGE = "local"
STATE_MACHINE = f"scones-unlimited-{STAGE}-image-workflow"
THRESHOLD = 0.93  # serverless.yml's default `threshold` param, which this deploy keeps
GATE_ERROR = "THRESHOLD_CONFIDENCE_NOT_MET"
PROJECT_FILES = (
    "serverless.yml",
    "resources",  # the CloudFormation serverless.yml includes
    "package.json",
    "handlers",
    "contract",
    "statemachine",
    "events",
)
PROBED_IMAGES = 40  # test images whose probabilities are read from the endpoint directly
EVALUATED_IMAGES = 12
QUICK_MODEL_STEPS = 60  # enough SGD steps for both confident and doubtful test images


@dataclass
class Workflow:
    """The deployed project and what the tests need to reach it."""

    bucket: str
    endpoint_name: str
    endpoint_url: str
    state_dir: Path
    aws: dict[str, str]
    project: Path
    work: Path
    # test/ key -> the endpoint's probabilities, read before any execution ran
    probabilities: dict[str, list[float]] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """This process's environment with every AWS variable replaced by the local AWS's."""
        return {**without_aws_variables(os.environ), **self.aws, "SLS_TELEMETRY_DISABLED": "1"}

    def client(self, service: str, **kwargs: Any) -> Any:
        return local_client(self.aws, service, **kwargs)

    def run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(command),
            cwd=self.project if command[0].endswith("sls") else REPO_ROOT,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def training_job(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "training_job", *args, timeout=timeout)

    def sls(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run(str(REPO_ROOT / "node_modules" / ".bin" / "sls"), *args, timeout=timeout)

    def machine_arn(self) -> str:
        machines = self.client("stepfunctions").list_state_machines()["stateMachines"]
        return next(m["stateMachineArn"] for m in machines if m["name"] == STATE_MACHINE)

    def confident_key(self) -> str:
        return max(self.probabilities, key=lambda key: max(self.probabilities[key]))

    def doubtful_key(self) -> str:
        return min(self.probabilities, key=lambda key: max(self.probabilities[key]))


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert result.returncode == 0, f"{what} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def local_aws_with_endpoint_port(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, str], int, Path]]:
    """A fresh local AWS whose Lambda workers reach a local endpoint on a port chosen now."""
    work = tmp_path_factory.mktemp("workflow-local")
    endpoint_port = free_port()
    cache = {"LOCAL_AWS_LAMBDA_CACHE": str(work / "lambda-cache")}
    with local_aws_server(
        work, free_port(), endpoint_port=endpoint_port, environment=cache, region=REGION
    ) as server:
        yield server.client_environment(region=REGION), endpoint_port, work


@pytest.fixture(scope="module")
def workflow(
    local_aws_with_endpoint_port: tuple[dict[str, str], int, Path], shared_data: Path
) -> Iterator[Workflow]:
    """Stage, put a quickly trained model in the bucket, serve it, `sls deploy` the project."""
    aws, endpoint_port, work = local_aws_with_endpoint_port
    project = work / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, project / name)
    # osls resolves plugins from the service's node_modules, as in the repository root.
    (project / "node_modules").symlink_to(REPO_ROOT / "node_modules")
    suffix = uuid.uuid4().hex[:10]
    flow = Workflow(
        bucket=f"scones-wf-{suffix}",
        endpoint_name=f"wf-{suffix}",
        endpoint_url=endpoint_url(endpoint_port),
        state_dir=work / "endpoints",
        aws=aws,
        project=project,
        work=work,
    )

    archive = shared_data / "cifar-100-python-vehicles.tar.gz"
    _check(
        flow.training_job(
            "stage",
            "--bucket",
            flow.bucket,
            "--source",
            str(archive),
            "--cache-dir",
            str(work / "cifar"),
        ),
        "training_job stage",
    )
    _put_quick_model(flow, archive)
    # The SageMaker execution role from docs/iam/, as the README makes it: the endpoint
    # reads its model and writes its captures with it.
    role = create_sagemaker_role(
        flow.client("iam"),
        flow.bucket,
        REGION,
        flow.client("sts").get_caller_identity()["Account"],
    )
    state_dir = flow.state_dir
    _check(
        flow.training_job(
            "deploy",
            "--mode",
            "local",
            "--bucket",
            flow.bucket,
            "--endpoint-name",
            flow.endpoint_name,
            "--port",
            str(endpoint_port),
            "--workers",
            "1",
            "--torch-threads",
            "1",
            "--state-dir",
            str(state_dir),
            "--role",
            role,
        ),
        "training_job deploy --mode local",
    )
    try:
        # The endpoint's name reaches the stack through the SSM parameter deploy published.
        # STANDARD: these tests read each execution's history (the Express stage is
        # `express_stage`'s, below).
        deployed = flow.sls(
            "deploy", "--stage", STAGE, "--region", REGION, "--param", f"bucket={flow.bucket}",
            "--param", "workflowType=STANDARD",
        )  # fmt: skip
        _check(deployed, "sls deploy")
        _probe_endpoint(flow)
        yield flow
    finally:
        flow.training_job(
            "deploy",
            "--mode",
            "local",
            "--stop",
            "--endpoint-name",
            flow.endpoint_name,
            "--state-dir",
            str(state_dir),
        )


def _put_quick_model(flow: Workflow, archive: Path) -> None:
    """The project's network after a few SGD steps, packaged as the training job packages it."""
    import torch

    from tests import sample_model

    torch.set_num_threads(1)
    model_dir = sample_model.train_quick_model(
        archive, flow.work / "model", steps=QUICK_MODEL_STEPS
    )
    package = sample_model.package_model(model_dir, flow.work / "model.tar.gz")
    s3 = flow.client("s3")
    s3.upload_file(str(package), flow.bucket, "models/quick-model/output/model.tar.gz")
    # deploy serves only an approved version of the model registry: register the quick
    # model (its metrics.json says what it is) and approve it, as a person would.
    note = json.dumps({"note": f"a quick model of {QUICK_MODEL_STEPS} SGD steps, not evaluated"})
    s3.put_object(Bucket=flow.bucket, Key="models/quick-model/output/metrics.json", Body=note)
    uri = f"s3://{flow.bucket}/models/quick-model/output/model.tar.gz"
    manifest = f"s3://{flow.bucket}/manifest.json"
    _check(flow.training_job("models", "register", "--model-data", uri, "--manifest", manifest),
           "training_job models register")  # fmt: skip
    _check(flow.training_job("models", "approve", "1", "--description", "the tests' model"),
           "training_job models approve")  # fmt: skip


def _probe_endpoint(flow: Workflow) -> None:
    """The endpoint's own probabilities for the first test images, to choose and check by."""
    s3 = flow.client("s3")
    runtime = flow.client("sagemaker-runtime", endpoint_url=flow.endpoint_url)
    manifest = s3.get_object(Bucket=flow.bucket, Key="test.lst")["Body"].read().decode()
    for _, label, filename in parse_lst(manifest)[:PROBED_IMAGES]:
        key = f"test/{filename}"
        image = s3.get_object(Bucket=flow.bucket, Key=key)["Body"].read()
        answer = runtime.invoke_endpoint(
            EndpointName=flow.endpoint_name, ContentType="image/png", Body=image
        )
        flow.probabilities[key] = json.loads(answer["Body"].read())
        flow.labels[key] = label
    best = [max(p) for p in flow.probabilities.values()]
    if max(best) < THRESHOLD or min(best) >= THRESHOLD:
        pytest.fail(
            f"the quick model gives no {'confident' if max(best) < THRESHOLD else 'doubtful'} "
            f"image among the first {PROBED_IMAGES}: change QUICK_MODEL_STEPS"
        )


def invoke_stepf(flow: Workflow, key: str) -> dict[str, Any]:
    """`sls invoke stepf` on the workflow event for `key`; the execution it printed."""
    event = flow.work / f"event-{uuid.uuid4().hex[:8]}.json"
    event.write_text(
        json.dumps({"image_data": "", "s3_bucket": flow.bucket, "s3_key": key, "inferences": []})
    )
    result = flow.sls(
        "invoke",
        "stepf",
        "--stage",
        STAGE,
        "--region",
        REGION,
        "--name",
        "ImageWorkflow",
        "--path",
        str(event),
    )
    # The plugin prints a succeeded execution on stdout and a failed one on stderr.
    printed = result.stdout + result.stderr
    start = printed.find('"executionArn"')
    assert start >= 0, f"no execution printed:\n{printed}"
    execution: dict[str, Any] = json.JSONDecoder().raw_decode(
        printed[printed.rfind("{", 0, start) :]
    )[0]
    return execution


def history(flow: Workflow, execution_arn: str) -> list[dict[str, Any]]:
    sfn = flow.client("stepfunctions")
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
    return [event for page in pages for event in page["events"]]


def executions_for(flow: Workflow, key: str) -> list[dict[str, Any]]:
    sfn = flow.client("stepfunctions")
    found = []
    pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=flow.machine_arn())
    for page in pages:
        for item in page["executions"]:
            described = sfn.describe_execution(executionArn=item["executionArn"])
            if json.loads(described["input"]).get("s3_key") == key:
                found.append(described)
    return found


def wait_finished(flow: Workflow, key: str, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = executions_for(flow, key)
        if found and all(e["status"] != "RUNNING" for e in found):
            return found
        assert time.monotonic() < deadline, f"no finished execution for {key} in {timeout}s"
        time.sleep(0.25)


def test_a_confident_image_passes_with_the_endpoints_probabilities(workflow: Workflow) -> None:
    key = workflow.confident_key()
    execution = invoke_stepf(workflow, key)
    assert execution["status"] == "SUCCEEDED", execution
    body = json.loads(execution["output"])["body"]
    assert body["s3_bucket"] == workflow.bucket
    assert body["s3_key"] == key
    assert body["inferences"] == pytest.approx(workflow.probabilities[key], abs=1e-5)
    assert max(body["inferences"]) >= THRESHOLD
    assert body["image_data"]  # serialize put the image in the event


def test_a_doubtful_image_stops_at_the_confidence_gate(workflow: Workflow) -> None:
    key = workflow.doubtful_key()
    assert max(workflow.probabilities[key]) < THRESHOLD
    execution = invoke_stepf(workflow, key)
    assert execution["status"] == "FAILED"
    assert execution["error"] == GATE_ERROR
    events = history(workflow, execution["executionArn"])
    failures = [e["taskFailedEventDetails"] for e in events if e["type"] == "TaskFailed"]
    assert [f["error"] for f in failures] == [GATE_ERROR]  # raised by the threshold filter
    assert GATE_ERROR in failures[0]["cause"]
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]
    assert entered == [
        "Serialize",
        "Classify",
        "FilterLowConfidence",
        "QueueForReview",
        "ConfidenceTooLow",
    ]
    assert events[-1]["type"] == "ExecutionFailed"


def upload_marker_and_wait(flow: Workflow) -> None:
    """Upload one more image under incoming/ and wait for its execution to finish: uploads
    notify in order (the local S3 sends each event before it answers the PUT), so by then
    every execution an earlier upload started exists too. What must not happen is checked
    after this positive signal, never after a sleep."""
    s3 = flow.client("s3")
    image = s3.get_object(Bucket=flow.bucket, Key=flow.confident_key())["Body"].read()
    marker = f"incoming/marker-{uuid.uuid4().hex}.png"
    s3.put_object(Bucket=flow.bucket, Key=marker, Body=image, ContentType="image/png")
    wait_finished(flow, marker)


def test_an_upload_under_incoming_starts_exactly_one_execution(workflow: Workflow) -> None:
    s3 = workflow.client("s3")
    image = s3.get_object(Bucket=workflow.bucket, Key=workflow.confident_key())["Body"].read()
    key = f"incoming/{uuid.uuid4().hex}.png"
    s3.put_object(Bucket=workflow.bucket, Key=key, Body=image, ContentType="image/png")
    finished = wait_finished(workflow, key)
    upload_marker_and_wait(workflow)  # a duplicate, were one started, exists by now
    found = executions_for(workflow, key)
    assert len(finished) == len(found) == 1
    assert found[0]["status"] == "SUCCEEDED"
    body = json.loads(found[0]["output"])["body"]
    assert body["s3_key"] == key
    assert max(body["inferences"]) >= THRESHOLD


def test_an_upload_outside_incoming_starts_none(workflow: Workflow) -> None:
    s3 = workflow.client("s3")
    key = f"uploads/{uuid.uuid4().hex}.png"
    s3.put_object(Bucket=workflow.bucket, Key=key, Body=b"\x89PNG\r\n\x1a\n")
    upload_marker_and_wait(workflow)  # an execution for `key`, were one started, exists now
    assert executions_for(workflow, key) == []


STATE_LIMIT_BYTES = 256 * 1024  # Step Functions' limit on a state's input or output
LAMBDA_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024  # Lambda's, on a synchronous request


def phone_photo() -> bytes:
    """A 4032x3024 JPEG of several MB, as a phone takes it: rotated by its EXIF
    Orientation tag (6: turn 90 degrees clockwise to display), with texture that
    compresses like a photo's (noise at a quarter of the resolution, scaled up)."""
    from PIL import Image

    texture = Image.frombytes("RGB", (1008, 756), os.urandom(1008 * 756 * 3))
    photo = texture.resize((4032, 3024), Image.Resampling.BILINEAR)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=80, exif=exif)
    return buffer.getvalue()


def large_png() -> bytes:
    """A PNG of a few MB (random pixels do not compress)."""
    from PIL import Image

    image = Image.frombytes("RGB", (1200, 1000), os.urandom(1200 * 1000 * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "suffix", "content_type"),
    [(phone_photo, "jpg", "image/jpeg"), (large_png, "png", "image/png")],
    ids=["phone-photo-jpeg", "large-png"],
)
def test_a_real_photo_completes_the_workflow_and_every_payload_stays_under_the_limits(
    workflow: Workflow, make: Any, suffix: str, content_type: str
) -> None:
    from contract.images import MAX_IMAGE_BYTES

    image = make()
    assert 2 * 1024 * 1024 < len(image) <= MAX_IMAGE_BYTES
    key = f"incoming/{uuid.uuid4().hex}.{suffix}"
    workflow.client("s3").put_object(
        Bucket=workflow.bucket, Key=key, Body=image, ContentType=content_type
    )
    [execution] = wait_finished(workflow, key, timeout=120)
    events = history(workflow, execution["executionArn"])
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]
    assert entered[:3] == ["Serialize", "Classify", "FilterLowConfidence"]
    # The workflow completed: passed, or stopped at the confidence gate, nothing else, and
    # the photo's decision was recorded.
    assert {"RecordDecision", "RecordAuditedDecision", "QueueForReview"} & set(entered)
    failures = [e["taskFailedEventDetails"]["error"] for e in events if e["type"] == "TaskFailed"]
    if execution["status"] == "SUCCEEDED":
        assert failures == []
    else:
        assert (execution["error"], failures) == (GATE_ERROR, [GATE_ERROR])

    outputs = {
        e["stateExitedEventDetails"]["name"]: json.loads(e["stateExitedEventDetails"]["output"])
        for e in events
        if "stateExitedEventDetails" in e
    }
    assert outputs["Serialize"]["body"]["image_data"] == ""  # the photo stayed in S3
    runtime = workflow.client("sagemaker-runtime", endpoint_url=workflow.endpoint_url)
    answer = runtime.invoke_endpoint(
        EndpointName=workflow.endpoint_name, ContentType=content_type, Body=image
    )
    own = json.loads(answer["Body"].read())
    assert outputs["Classify"]["body"]["inferences"] == pytest.approx(own, abs=1e-5)

    for event in events:
        for details in event.values():
            if not isinstance(details, dict):
                continue
            for field_name in ("input", "output", "parameters"):
                if field_name in details:
                    assert len(details[field_name].encode()) < STATE_LIMIT_BYTES // 2, (
                        event["type"],
                        field_name,
                    )
    scheduled = [
        e["taskScheduledEventDetails"]["parameters"] for e in events if e["type"] == "TaskScheduled"
    ]
    assert scheduled and all(len(p.encode()) < LAMBDA_PAYLOAD_LIMIT_BYTES for p in scheduled)


@pytest.mark.parametrize(
    ("body", "handler_error"),
    [
        (b"", "NotAnImage"),  # empty
        (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'a'>]><x>&a;</x>", "NotAnImage"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (5 * 1024 * 1024), "ImageTooLarge"),  # oversized
        # The model cannot decode it: the upload's fault, not an endpoint outage.
        (b"\x89PNG\r\n\x1a\n" + b"not the rest of a png", "NotAnImage"),
    ],
    ids=["empty", "not-an-image", "oversized", "truncated-png"],
)
def test_a_bad_upload_is_a_rejected_decision_naming_the_handlers_error(
    workflow: Workflow, body: bytes, handler_error: str
) -> None:
    """Issue 21, item 13: a bad upload ends in UploadRejected (not WorkflowFailed, which
    the alarm counts) and leaves a decision item, `rejected` with the handler's error."""
    key = f"incoming/{uuid.uuid4().hex}.png"
    workflow.client("s3").put_object(Bucket=workflow.bucket, Key=key, Body=body)
    [execution] = wait_finished(workflow, key)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "UploadRejected"
    events = history(workflow, execution["executionArn"])
    failures = [e["taskFailedEventDetails"]["error"] for e in events if e["type"] == "TaskFailed"]
    assert failures == [handler_error]
    decision = decision_of(workflow, key)
    assert (decision["status"], decision["rejection"]) == ("rejected", handler_error)


@pytest.mark.parametrize(
    ("event", "handler_error"),
    [
        ({}, "InvalidEvent"),
        ({"s3_bucket": "someone-elses-bucket", "s3_key": "test/x.png"}, "BucketNotAllowed"),
        ({"s3_key": "../../etc/passwd"}, "KeyNotAllowed"),
        ({"s3_key": "test/no-such-image.png"}, "ImageNotFound"),
        ({"s3_key": 17}, "InvalidEvent"),
    ],
    ids=["empty", "other-bucket", "path-traversal", "missing-key", "malformed"],
)
def test_a_hostile_or_malformed_event_fails_at_serialize(
    workflow: Workflow, event: dict[str, Any], handler_error: str
) -> None:
    document = {"s3_bucket": workflow.bucket, **event} if event else {}
    sfn = workflow.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=workflow.machine_arn(),
        name=uuid.uuid4().hex,
        input=json.dumps(document),
    )["executionArn"]
    deadline = time.monotonic() + 60
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert described["status"] == "FAILED"
    events = history(workflow, arn)
    failures = [e["taskFailedEventDetails"]["error"] for e in events if e["type"] == "TaskFailed"]
    assert failures == [handler_error]
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]
    if handler_error == "ImageNotFound":
        # An upload gone before its run read it leaves a trace: a rejected decision.
        assert described["error"] == "UploadRejected"
        assert (entered[0], entered[-2:]) == ("Serialize", ["RecordRejection", "UploadRejected"])
    else:
        assert described["error"] == "WorkflowFailed"
        assert entered == ["Serialize", "WorkflowFailed"]


def test_evaluate_counts_agree_with_the_endpoints_own_answers(workflow: Workflow) -> None:
    result = workflow.training_job(
        "evaluate",
        "--state-machine",
        STATE_MACHINE,
        "--images",
        f"s3://{workflow.bucket}/test/",
        "--labels",
        f"s3://{workflow.bucket}/test.lst",
        "--limit",
        str(EVALUATED_IMAGES),
        "--concurrency",
        "4",
        "--json",
    )
    _check(result, "training_job evaluate")
    report = json.loads(result.stdout)
    evaluated = list(workflow.probabilities)[:EVALUATED_IMAGES]
    confident = [key for key in evaluated if max(workflow.probabilities[key]) >= THRESHOLD]
    stopped = len(evaluated) - len(confident)
    correct = sum(
        1
        for key in confident
        if workflow.probabilities[key].index(max(workflow.probabilities[key]))
        == workflow.labels[key]
    )
    assert report["executions"] == EVALUATED_IMAGES
    assert report["succeeded"] == len(confident)
    assert report["failed"] == stopped
    assert report["failed_by_error"] == ({GATE_ERROR: stopped} if stopped else {})
    assert report["stopped_share"] == pytest.approx(stopped / EVALUATED_IMAGES)
    if confident:
        assert report["gate_accuracy"] == pytest.approx(correct / len(confident))
    else:
        assert report["gate_accuracy"] is None


def test_the_stack_is_in_its_region_and_not_found_from_another(workflow: Workflow) -> None:
    other = "us-east-1"
    arn = workflow.machine_arn()
    assert arn.split(":")[3] == REGION
    sfn = workflow.client("stepfunctions", region_name=other)
    assert STATE_MACHINE not in [m["name"] for m in sfn.list_state_machines()["stateMachines"]]
    with pytest.raises(ClientError) as missing:
        sfn.describe_state_machine(stateMachineArn=arn.replace(REGION, other))
    assert missing.value.response["Error"]["Code"] == "StateMachineDoesNotExist"
    function = f"scones-unlimited-{STAGE}-serialize"
    assert workflow.client("lambda").get_function(FunctionName=function)
    with pytest.raises(ClientError) as missing:
        workflow.client("lambda", region_name=other).get_function(FunctionName=function)
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    stacks = workflow.client("cloudformation", region_name=other).describe_stacks()["Stacks"]
    assert not [s for s in stacks if s["StackName"].startswith("scones-unlimited")]
    # S3's bucket names are global: the bucket is seen from every region, and says where it is.
    s3 = workflow.client("s3", region_name=other)
    location = s3.get_bucket_location(Bucket=workflow.bucket)["LocationConstraint"]
    assert location == REGION


def test_the_endpoint_writes_its_captures_as_the_execution_role(workflow: Workflow) -> None:
    """The endpoint's process holds the role's temporary credentials, not the operator's,
    and the captures of the probed requests land in the bucket with them."""
    pid = int((workflow.state_dir / f"{workflow.endpoint_name}.pid").read_text())
    variables = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in item
    )
    assert variables["AWS_ACCESS_KEY_ID"] != workflow.aws["AWS_ACCESS_KEY_ID"]
    identity = local_client(
        {**workflow.aws, **{k: variables[k] for k in variables if k.startswith("AWS_")}}, "sts"
    ).get_caller_identity()
    assert ":assumed-role/SconesSageMakerRole/" in identity["Arn"]
    s3 = workflow.client("s3")
    prefix = f"data_capture/{workflow.endpoint_name}/"
    deadline = time.monotonic() + 60
    while not s3.list_objects_v2(Bucket=workflow.bucket, Prefix=prefix).get("KeyCount"):
        assert time.monotonic() < deadline, f"no capture under s3://{workflow.bucket}/{prefix}"
        time.sleep(0.5)


# --- decisions: the table, the review queue, the routing event ------------------------


DECISIONS_TABLE = f"scones-unlimited-{STAGE}-decisions"


@dataclass
class Subscriber:
    """A routing system as docs/events.md subscribes one: an EventBridge rule on the
    decision's source and detail type, delivering to an SQS queue it reads."""

    sqs: Any
    queue_url: str
    received: list[dict[str, Any]] = field(default_factory=list)

    def events_for(self, image: str) -> list[dict[str, Any]]:
        """Every event received so far about `image` (delivery is done when PutEvents
        answers, so an execution's event is in the queue once the execution ended)."""
        while batch := self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", []):
            for message in batch:
                self.received.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
        return [event for event in self.received if event["detail"]["image"] == image]


@pytest.fixture(scope="module")
def subscriber(workflow: Workflow) -> Subscriber:
    sqs, events = workflow.client("sqs"), workflow.client("events")
    queue_url = sqs.create_queue(QueueName=f"routing-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    rule_arn = events.put_rule(
        Name=f"routing-{uuid.uuid4().hex[:8]}",
        EventPattern=json.dumps({"source": [EVENT_SOURCE], "detail-type": [EVENT_DETAIL_TYPE]}),
    )["RuleArn"]
    # On AWS the queue must let EventBridge send for this rule.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    events.put_targets(
        Rule=rule_arn.rsplit("/", 1)[-1], Targets=[{"Id": "routing", "Arn": queue_arn}]
    )
    return Subscriber(sqs, queue_url)


def photo_id(flow: Workflow, key: str) -> str:
    """The decision id of the upload at `key` now: its location and its ETag."""
    etag = flow.client("s3").head_object(Bucket=flow.bucket, Key=key)["ETag"].strip('"')
    return image_id(flow.bucket, key, etag)


def copy_of(flow: Workflow, key: str, audited: bool | None = False, name: str = "") -> str:
    """A new key holding the image at `key` (a photo the workflow has not seen), chosen in
    or out of the audit sample (`audited`; None: either)."""
    s3 = flow.client("s3")
    etag = photo_id(flow, key).rpartition("#")[2]  # a copy keeps its source's ETag
    for attempt in range(10_000):
        new_key = f"test/decisions-{uuid.uuid4().hex[:8]}-{attempt}{name}.png"
        sampled = in_audit_sample(image_id(flow.bucket, new_key, etag), DEFAULT_AUDIT_RATE)
        if audited is None or sampled == audited:
            s3.copy_object(
                Bucket=flow.bucket, Key=new_key, CopySource={"Bucket": flow.bucket, "Key": key}
            )
            return new_key
    raise AssertionError("no key found in or out of the audit sample")


def decision_of(flow: Workflow, key: str) -> dict[str, Any]:
    """The photo's decision item, as plain values."""
    item = flow.client("dynamodb").get_item(
        TableName=DECISIONS_TABLE,
        Key={"image": {"S": photo_id(flow, key)}},
        ConsistentRead=True,
    )["Item"]
    return {name: _plain(value) for name, value in item.items()}


def _plain(value: dict[str, Any]) -> Any:
    ((kind, inner),) = value.items()
    if kind == "N":
        return float(inner)
    if kind == "L":
        return [_plain(v) for v in inner]
    if kind == "NULL":
        return None
    return inner


def review_queue(flow: Workflow) -> list[str]:
    """The image ids waiting for a person, oldest first (the review-queue index)."""
    pages = (
        flow.client("dynamodb")
        .get_paginator("query")
        .paginate(
            TableName=DECISIONS_TABLE,
            IndexName=REVIEW_INDEX,
            KeyConditionExpression="review_pending = :pending",
            ExpressionAttributeValues={":pending": {"S": REVIEW_PENDING}},
        )
    )
    return [item["image"]["S"] for page in pages for item in page["Items"]]


def run_execution(flow: Workflow, key: str) -> dict[str, Any]:
    """The workflow on `key`, started with the Step Functions API (`sls invoke stepf`
    is tested above; its CLI start costs seconds a run), once it has ended."""
    sfn = flow.client("stepfunctions")
    event = {"image_data": "", "s3_bucket": flow.bucket, "s3_key": key, "inferences": []}
    arn = sfn.start_execution(stateMachineArn=flow.machine_arn(), input=json.dumps(event))[
        "executionArn"
    ]
    deadline = time.monotonic() + 60
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, f"{arn} still running"
        time.sleep(0.1)
    return dict(described)


def entered_states(flow: Workflow, execution_arn: str) -> list[str]:
    return [
        e["stateEnteredEventDetails"]["name"]
        for e in history(flow, execution_arn)
        if "stateEnteredEventDetails" in e
    ]


def test_a_confident_photo_is_recorded_as_routed_and_announced_once(
    workflow: Workflow, subscriber: Subscriber
) -> None:
    key = copy_of(workflow, workflow.confident_key())
    execution = run_execution(workflow, key)
    assert execution["status"] == "SUCCEEDED", execution
    assert entered_states(workflow, execution["executionArn"])[-3:] == [
        "RecordDecision",
        "PublishDecision",
        "MarkEventSent",  # the event went out: the outbox mark is gone
    ]
    probabilities = workflow.probabilities[workflow.confident_key()]
    decision = decision_of(workflow, key)
    decided_at = decision.pop("decided_at")
    assert datetime.fromisoformat(decided_at).tzinfo is not None
    assert decision == {
        "image": photo_id(workflow, key),
        "label": ("bicycle", "motorcycle")[probabilities.index(max(probabilities))],
        "confidence": pytest.approx(max(probabilities), abs=1e-5),
        "inferences": pytest.approx(probabilities, abs=1e-5),
        "model_version": version_of_variant(decision["variant"]),
        "endpoint": workflow.endpoint_name,
        "variant": decision["variant"],
        "execution": execution["executionArn"],
        "status": STATUS_ROUTED,
        "source": SOURCE_MODEL,
        "revision": 0,
        # The sample model was trained without familiarity statistics: unknown (NULL).
        "familiarity": None,
    }
    # The variant that answered, named after the approved version deploy serves.
    assert (decision["variant"], decision["model_version"]) == ("v1", "1")
    assert photo_id(workflow, key) not in review_queue(workflow)
    [event] = subscriber.events_for(photo_id(workflow, key))
    assert (event["source"], event["detail-type"]) == (EVENT_SOURCE, EVENT_DETAIL_TYPE)
    assert event["detail"] == {
        "image": decision["image"],
        "label": decision["label"],
        "confidence": pytest.approx(decision["confidence"], abs=1e-9),
        "model_version": decision["model_version"],
        "endpoint": decision["endpoint"],
        "variant": decision["variant"],
        "decided_at": decided_at,
        "execution": execution["executionArn"],
        "source": SOURCE_MODEL,
        "status": STATUS_ROUTED,
    }
    assert execution["executionArn"] in event["resources"]


def test_the_same_photo_twice_leaves_one_decision_and_one_event(
    workflow: Workflow, subscriber: Subscriber
) -> None:
    key = copy_of(workflow, workflow.confident_key())
    first = run_execution(workflow, key)
    decided = decision_of(workflow, key)
    second = run_execution(workflow, key)
    assert (first["status"], second["status"]) == ("SUCCEEDED", "SUCCEEDED")
    assert entered_states(workflow, second["executionArn"])[-2:] == [
        "RecordDecision",
        "AlreadyDecided",
    ]
    failures = [
        e["taskFailedEventDetails"]["error"]
        for e in history(workflow, second["executionArn"])
        if e["type"] == "TaskFailed"
    ]
    assert failures == ["DynamoDB.ConditionalCheckFailedException"]
    assert decision_of(workflow, key) == decided  # the first execution's, untouched
    assert decided["execution"] == first["executionArn"]
    events = subscriber.events_for(photo_id(workflow, key))
    assert [e["detail"]["execution"] for e in events] == [first["executionArn"]]


def test_a_doubtful_photo_is_queued_for_review_and_still_stops_at_the_gate(
    workflow: Workflow, subscriber: Subscriber
) -> None:
    key = copy_of(workflow, workflow.doubtful_key(), audited=None)
    image = photo_id(workflow, key)
    execution = run_execution(workflow, key)
    assert (execution["status"], execution["error"]) == ("FAILED", GATE_ERROR)
    decision = decision_of(workflow, key)
    probabilities = workflow.probabilities[workflow.doubtful_key()]
    assert decision["status"] == STATUS_NEEDS_REVIEW
    assert decision["review_reason"] == REASON_DOUBTFUL
    assert decision["review_pending"] == REVIEW_PENDING
    assert decision["queued_at"] == decision["decided_at"]
    assert decision["confidence"] == pytest.approx(max(probabilities), abs=1e-5)
    assert decision["execution"] == execution["executionArn"]
    assert image in review_queue(workflow)
    assert subscriber.events_for(image) == []  # nothing routed
    # Again: still stopped at the gate, still one decision, queued once.
    again = run_execution(workflow, key)
    assert (again["status"], again["error"]) == ("FAILED", GATE_ERROR)
    assert decision_of(workflow, key) == decision
    assert review_queue(workflow).count(image) == 1


def test_the_readmes_review_queue_command_lists_a_queued_photo(workflow: Workflow) -> None:
    """The README's `aws dynamodb query` of the review queue, run with the AWS CLI against
    the deployed table."""
    if shutil.which("aws") is None:
        pytest.skip("the AWS CLI the README uses is not installed here")
    key = copy_of(workflow, workflow.doubtful_key(), audited=None)
    run_execution(workflow, key)
    readme = (REPO_ROOT / "README.md").read_text().replace("\\\n", " ")
    [command] = [
        line.strip()
        for line in readme.split("## The AWS path")[0].splitlines()
        if line.strip().startswith("aws dynamodb query")
    ]
    result = subprocess.run(
        command, shell=True, env=workflow.environment(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    queued = [item["image"]["S"] for item in json.loads(result.stdout)["Items"]]
    assert photo_id(workflow, key) in queued


def test_an_audit_sampled_photo_is_routed_and_queued_for_review(
    workflow: Workflow, subscriber: Subscriber
) -> None:
    key = copy_of(workflow, workflow.confident_key(), audited=True)
    image = photo_id(workflow, key)
    execution = run_execution(workflow, key)
    assert execution["status"] == "SUCCEEDED", execution
    assert "RecordAuditedDecision" in entered_states(workflow, execution["executionArn"])
    decision = decision_of(workflow, key)
    assert (decision["status"], decision["review_reason"]) == (STATUS_ROUTED, REASON_AUDIT)
    assert decision["queued_at"] == decision["decided_at"]
    assert image in review_queue(workflow)
    [event] = subscriber.events_for(image)  # routed as any other passed photo
    assert event["detail"]["status"] == STATUS_ROUTED


def test_a_photo_with_a_hostile_key_is_decided_under_exactly_its_id(
    workflow: Workflow, subscriber: Subscriber
) -> None:
    # Quotes, braces and a DynamoDB type tag in the key must stay data, never structure.
    key = copy_of(workflow, workflow.confident_key(), name=' "}, {"S": "x"} ünï $.decision')
    image = photo_id(workflow, key)
    execution = run_execution(workflow, key)
    assert execution["status"] == "SUCCEEDED", execution
    assert decision_of(workflow, key)["image"] == image
    [event] = subscriber.events_for(image)
    assert event["detail"]["image"] == image


def test_the_stack_names_its_decisions_table(workflow: Workflow) -> None:
    [stack] = workflow.client("cloudformation").describe_stacks(
        StackName=f"scones-unlimited-{STAGE}"
    )["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["DecisionsTableName"] == DECISIONS_TABLE
    table = workflow.client("dynamodb").describe_table(TableName=DECISIONS_TABLE)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSEDescription"]["Status"] == "ENABLED"
    backups = workflow.client("dynamodb").describe_continuous_backups(TableName=DECISIONS_TABLE)
    recovery = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert recovery["PointInTimeRecoveryStatus"] == "ENABLED"
    # Both sparse indexes, with the keys the code reads them by (training_job/review/table.py).
    declared = {
        index["IndexName"]: index["KeySchema"]
        for index in table_definition(DECISIONS_TABLE)["GlobalSecondaryIndexes"]
    }
    assert {i["IndexName"]: i["KeySchema"] for i in table["GlobalSecondaryIndexes"]} == declared
    assert REVIEW_INDEX in declared


def cost_reports(flow: Workflow, stack: str) -> dict[str, dict[str, Any]]:
    """`training_job cost` of `stack` at 1M photos a month and a day (its lines by service),
    with the endpoint's autoscaling as `deploy --mode sagemaker` registers it (min 1, max
    4, the load-tested target); the tables are printed for docs/benchmarks-history.md
    (pytest -s)."""
    scaling_client = flow.client("application-autoscaling")
    config = flow.client("sagemaker").describe_endpoint_config(
        EndpointConfigName=flow.client("sagemaker").describe_endpoint(
            EndpointName=flow.endpoint_name
        )["EndpointConfigName"]
    )
    variant = config["ProductionVariants"][0]["VariantName"]
    autoscaling.register(scaling_client, flow.endpoint_name, variant, 1, 4)
    scaling_client.put_scaling_policy(
        PolicyName=autoscaling.policy_name(flow.endpoint_name),
        ServiceNamespace=autoscaling.SERVICE_NAMESPACE,
        ResourceId=autoscaling.resource_id(flow.endpoint_name, variant),
        ScalableDimension=autoscaling.SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration=autoscaling.target_tracking(
            autoscaling.DEFAULT_TARGET_INVOCATIONS_PER_MINUTE
        ),
    )
    try:
        reports = {}
        for volume in ("--photos-per-month", "--photos-per-day"):
            command = ("cost", "--stack", stack, "--executions", "2")
            result = flow.training_job(
                *command, "--endpoint", flow.endpoint_name, volume, "1000000"
            )
            _check(result, "training_job cost")
            print(result.stdout)  # the table docs/benchmarks-history.md records (pytest -s)
            result = flow.training_job(
                *command, "--endpoint", flow.endpoint_name, volume, "1000000", "--json"
            )
            _check(result, "training_job cost --json")
            reports[volume] = {line["service"]: line for line in json.loads(result.stdout)["lines"]}
        return reports
    finally:
        scaling = autoscaling.Scaling.of(scaling_client, flow.endpoint_name, variant)
        assert scaling is not None
        scaling.remove(scaling_client, flow.endpoint_name, variant)


def test_the_cost_model_counts_the_deployed_workflows_executions(workflow: Workflow) -> None:
    """`training_job cost` over the stack's own executions (a confident and a doubtful
    photo at least) and its endpoint, with the autoscaling `deploy --mode sagemaker`
    registers (min 1, max 4, the load-tested target): every photo enters Serialize,
    Classify and the gate, so at least 4 billed transitions (Step Functions pricing: each
    step executed, retries included) and 3 Lambda invocations at the functions' deployed
    memory; the endpoint (recorded by `deploy --mode local` as one ml.m5.xlarge) runs 1
    instance at 1M photos a month and 4, its maximum, only past 4 x 9,540 a minute."""
    run_execution(workflow, workflow.confident_key())
    run_execution(workflow, workflow.doubtful_key())
    reports = cost_reports(workflow, f"scones-unlimited-{STAGE}")
    monthly = reports["--photos-per-month"]
    transitions = float(monthly["Step Functions"]["what"].split()[0])
    invocations = float(monthly["Lambda"]["what"].split()[0])
    assert transitions >= 4 and invocations >= 3
    assert monthly["DynamoDB"]["per_million"] > 0  # each photo's decision is written
    for report in reports.values():  # 23 and 694 photos a minute: under one instance's target
        assert report["SageMaker endpoint"]["what"].startswith("1 x ml.m5.xlarge")
        assert report["SageMaker endpoint"]["monthly"] == pytest.approx(0.23 * 730)


# The same project deployed again as an EXPRESS stage over the same bucket and endpoint:
# last in this module, since its trigger also starts on the bucket's uploads.
EXPRESS_STAGE = "localx"


@pytest.fixture(scope="module")
def express_stage(workflow: Workflow) -> str:
    """`sls deploy --param workflowType=EXPRESS` of a second stage; its state machine's ARN."""
    # What `training_job deploy` publishes for a stage: its endpoint's name.
    workflow.client("ssm").put_parameter(
        Name=f"/scones-unlimited/{EXPRESS_STAGE}/endpoint-name",
        Value=workflow.endpoint_name,
        Type="String",
        Overwrite=True,
    )
    deployed = workflow.sls(
        "deploy", "--stage", EXPRESS_STAGE, "--region", REGION,
        "--param", f"bucket={workflow.bucket}", "--param", "workflowType=EXPRESS",
    )  # fmt: skip
    _check(deployed, "sls deploy (EXPRESS)")
    name = f"scones-unlimited-{EXPRESS_STAGE}-image-workflow"
    machines = workflow.client("stepfunctions").list_state_machines()["stateMachines"]
    return str(next(m["stateMachineArn"] for m in machines if m["name"] == name))


# Run alone, it also carries the module's setup (staging, a quick training, the endpoint
# and the first stack) on top of its own stage's `sls deploy`: 300 s is the module's limit
# for one test after that setup.
@pytest.mark.timeout(600)
def test_the_express_stage_runs_the_workflow_and_is_priced_per_request(
    workflow: Workflow, express_stage: str
) -> None:
    """The deployed EXPRESS workflow, run synchronously (StartSyncExecution answers with
    the end: "200 OK response, even if your execution fails"), decides a confident photo
    and stops a doubtful one at the gate, as the Standard stage does; its cost is read from
    its log group (Express: "Execution history is not captured by Step Functions") and
    priced per request and GB-second (Step Functions pricing: $1.00 a million requests,
    duration rounded up to 100 ms times 64 MB at $0.00001667 a GB-second), with no
    transitions. The tables are in docs/benchmarks-history.md ("Express workflows"); the $25
    goal's row is in docs/benchmarks.md."""
    sfn = workflow.client("stepfunctions")
    assert sfn.describe_state_machine(stateMachineArn=express_stage)["type"] == "EXPRESS"
    ends = {}
    for key in (workflow.confident_key(), workflow.doubtful_key()):
        event = {"image_data": "", "s3_bucket": workflow.bucket, "s3_key": key, "inferences": []}
        ended = sfn.start_sync_execution(stateMachineArn=express_stage, input=json.dumps(event))
        ends[key] = (ended["status"], ended.get("error"))
    assert ends[workflow.confident_key()] == ("SUCCEEDED", None)
    assert ends[workflow.doubtful_key()] == ("FAILED", GATE_ERROR)
    # The S3 trigger starts the Express workflow as it starts a Standard one (EventBridge's
    # Step Functions target: StartExecution), and the run records its decision.
    dynamodb = workflow.client("dynamodb")
    key = f"incoming/{uuid.uuid4().hex}.png"
    body = workflow.client("s3").get_object(Bucket=workflow.bucket, Key=workflow.confident_key())
    workflow.client("s3").put_object(Bucket=workflow.bucket, Key=key, Body=body["Body"].read())
    deadline = time.monotonic() + 60
    while "Item" not in (
        found := dynamodb.get_item(
            TableName=f"scones-unlimited-{EXPRESS_STAGE}-decisions",
            Key={"image": {"S": photo_id(workflow, key)}},
            ConsistentRead=True,
        )
    ):
        assert time.monotonic() < deadline, f"no decision for {key} from the Express stage"
        time.sleep(0.2)
    assert ":express:" in found["Item"]["execution"]["S"]
    reports = cost_reports(workflow, f"scones-unlimited-{EXPRESS_STAGE}")
    for report in reports.values():
        workflow_line = report["Step Functions"]
        assert workflow_line["what"].startswith("1 request, ")
        gb_seconds = float(workflow_line["what"].split()[2])  # printed to 4 digits
        units = gb_seconds / (64 / 1024 * 0.1)  # 64 MB x 100 ms, each execution's own
        assert units >= 1 and abs(units * 2 - round(units * 2)) < 0.01  # 2 executions' mean
        assert workflow_line["per_million"] == pytest.approx(1.0 + gb_seconds * 16.67, rel=1e-3)
        assert report["Lambda"]["what"].startswith("3 invocations")
