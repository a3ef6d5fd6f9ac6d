"""`python -m training_job deploy`: the SageMaker requests it makes, checked against the
local AWS (moto), the registered version it picks and the archive it unpacks, and its
command line."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.baselines import known_baseline
from tests.training_job.registry_helpers import archive_bytes, register_output
from training_job.__main__ import main
from training_job.models import registry
from training_job.serving import deploy, deployment

ROLE = "arn:aws:iam::123456789012:role/scones-sagemaker"


# What the built-in algorithm writes.
BUILTIN = archive_bytes(
    ("image-classification-0030.params", "image-classification-symbol.json", "model-shapes.json")
)


@pytest.fixture
def group(unique_name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A model group of this test's own, the default of every command it runs."""
    name = f"g-{unique_name}"
    monkeypatch.setattr(registry, "DEFAULT_GROUP", name)
    return name


@pytest.fixture
def bucket(local_aws: dict[str, str], unique_name: str, group: str) -> str:
    """Versions 1 and 2 approved, version 3 pending: deploy serves version 2."""
    boto3.client("s3").create_bucket(Bucket=unique_name)
    register_output(unique_name, "job-1", group, status=registry.APPROVED)
    register_output(unique_name, "job-2", group, status=registry.APPROVED)
    register_output(unique_name, "job-3", group)
    return unique_name


def served_model(endpoint: str) -> tuple[str, dict[str, Any]]:
    """The endpoint's variant name and its SageMaker model."""
    sm = boto3.client("sagemaker")
    config_name = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    [variant] = sm.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    return variant["VariantName"], sm.describe_model(ModelName=variant["ModelName"])


def test_the_newest_approved_version_is_chosen(bucket: str, group: str) -> None:
    chosen = deploy.chosen_version(boto3.client("sagemaker"), boto3.client("s3"), group, None)
    assert (chosen.version, chosen.status) == (2, "Approved")
    assert chosen.model_data == f"s3://{bucket}/models/job-2/output/model.tar.gz"


@pytest.mark.parametrize(
    ("status", "complaint"),
    [(None, "is PendingManualApproval"), (registry.REJECTED, "is Rejected")],
)
def test_an_unapproved_version_is_refused_and_nothing_is_created(
    bucket: str, group: str, unique_name: str, status: str | None, complaint: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    if status is not None:
        registry.set_status(
            boto3.client("sagemaker"), registry.version(boto3.client("sagemaker"), group, 3),
            status, "no",
        )  # fmt: skip
    endpoint = f"ep-{unique_name}"
    argv = ["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE,
            "--endpoint-name", endpoint, "--model-version", "3"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"version 3 of {group} {complaint}: only Approved versions are served" in err
    sm = boto3.client("sagemaker")
    assert sm.list_models(NameContains=endpoint)["Models"] == []
    assert sm.list_endpoints(NameContains=endpoint)["Endpoints"] == []


def test_an_approved_version_whose_archive_was_replaced_is_refused(
    bucket: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever may write under models/ cannot swap the archive of an approved version."""
    boto3.client("s3").put_object(
        Bucket=bucket, Key="models/job-2/output/model.tar.gz",
        Body=archive_bytes(("model.pth", "model.json", "code/inference.py", "evil.py")),
    )  # fmt: skip
    endpoint = f"ep-{unique_name}"
    argv = ["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE,
            "--endpoint-name", endpoint]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"version 2's s3://{bucket}/models/job-2/output/model.tar.gz changed since" in err
    assert "refusing to serve what nobody approved" in err
    assert boto3.client("sagemaker").list_models(NameContains=endpoint)["Models"] == []


def test_no_approved_version_is_an_error_that_says_what_to_do(
    local_aws: dict[str, str], unique_name: str, group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("s3").create_bucket(Bucket=unique_name)
    argv = ["deploy", "--mode", "sagemaker", "--bucket", unique_name, "--role", ROLE]
    assert main(argv) == 1  # no group at all: nothing was ever trained
    assert f"no model group {group}" in capsys.readouterr().err
    register_output(unique_name, "job-1", group)  # registered, pending approval
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"model group {group} has no approved version" in err and "models approve" in err
    assert main([*argv, "--model-version", "9"]) == 1
    assert f"model group {group} has no version 9 (versions: 1)" in capsys.readouterr().err


def test_sagemaker_deployment_creates_model_capture_endpoint_scaling_and_parameter(
    bucket: str, unique_name: str
) -> None:
    endpoint = f"ep-{unique_name}"
    parameter = f"/test/{unique_name}/endpoint-name"
    common = ["--endpoint-name", endpoint, "--parameter-name", parameter]
    code = main(
        [
            "deploy",
            "--mode",
            "sagemaker",
            "--bucket",
            bucket,
            "--role",
            ROLE,
            *common,
            "--capture-sampling",
            "40",
            "--min-instances",
            "2",
            "--max-instances",
            "5",
            "--target-invocations",
            "90",
            "--instance-type",
            "ml.c5.large",
        ]
    )
    assert code == 0
    sm = boto3.client("sagemaker")
    described = sm.describe_endpoint(EndpointName=endpoint)
    assert described["EndpointStatus"] == "InService"
    config = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    [variant] = config["ProductionVariants"]
    assert variant["InstanceType"] == "ml.c5.large"
    assert variant["InitialInstanceCount"] == 2
    capture_config = config["DataCaptureConfig"]
    assert capture_config["EnableCapture"] is True
    assert capture_config["InitialSamplingPercentage"] == 40
    assert capture_config["DestinationS3Uri"] == f"s3://{bucket}/data_capture"
    assert {option["CaptureMode"] for option in capture_config["CaptureOptions"]} == {
        "Input",
        "Output",
    }
    assert capture_config["CaptureContentTypeHeader"] == {"JsonContentTypes": ["application/json"]}

    # The model is the newest approved version's package, and the variant says which.
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["ExecutionRoleArn"] == ROLE
    version = registry.version(sm, registry.DEFAULT_GROUP, 2)
    assert model["PrimaryContainer"] == {"ModelPackageName": version.arn}
    assert variant["VariantName"] == "v2"
    assert registry.deployed_packages(sm, endpoint) == {version.arn: "v2"}

    autoscaling = boto3.client("application-autoscaling")
    resource = f"endpoint/{endpoint}/variant/v2"
    [target] = autoscaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource]
    )["ScalableTargets"]
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 5)
    [policy] = autoscaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=resource
    )["ScalingPolicies"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 90
    assert tracking["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }
    ssm = boto3.client("ssm")
    stored = ssm.get_parameter(Name=parameter)["Parameter"]
    assert (stored["Value"], stored["Type"]) == (endpoint, "String")

    # A second deployment under the same name is refused, not half-applied.
    again = ["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE, *common]
    assert main(again) == 1

    assert main(["deploy", "--mode", "sagemaker", "--delete", *common]) == 0
    with pytest.raises(ClientError):
        sm.describe_endpoint(EndpointName=endpoint)
    with pytest.raises(ClientError):
        sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    with pytest.raises(ClientError):
        sm.describe_model(ModelName=variant["ModelName"])
    assert not autoscaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource]
    )["ScalableTargets"]
    assert not autoscaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=resource
    )["ScalingPolicies"]
    with pytest.raises(ClientError, match="ParameterNotFound"):
        ssm.get_parameter(Name=parameter)
    # Deleting what is already gone is not an error.
    assert main(["deploy", "--mode", "sagemaker", "--delete", *common]) == 0


def test_a_chosen_approved_version_is_deployed_and_marked_in_the_list(
    bucket: str, unique_name: str, group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"ep-{unique_name}"
    common = ["--endpoint-name", endpoint, "--parameter-name", f"/t/{unique_name}"]
    argv = ["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE, *common]
    assert main([*argv, "--model-version", "1"]) == 0
    variant, model = served_model(endpoint)
    version = registry.version(boto3.client("sagemaker"), group, 1)
    assert (variant, model["PrimaryContainer"]["ModelPackageName"]) == ("v1", version.arn)
    capsys.readouterr()
    assert main(["models", "list", "--endpoint-name", endpoint]) == 0
    lines = capsys.readouterr().out.splitlines()
    marks = {line[2:].split()[0]: line[0] for line in lines[1:4]}  # version -> its mark
    assert marks == {"3": " ", "2": " ", "1": "*"}
    assert lines[-1] == f"* served by endpoint {endpoint} (variant v1)"
    assert main(["deploy", "--mode", "sagemaker", "--delete", *common]) == 0


def test_the_default_scaling_target_is_the_load_test_formula_and_logs_expire(
    bucket: str, unique_name: str
) -> None:
    """The target comes from a measurement, as SageMaker's "Load testing your auto scaling
    configuration" derives it: SageMakerVariantInvocationsPerInstance = MAX_RPS x
    SAFETY_FACTOR x 60, with 0.5 as the starting safety factor (70 a minute pinned the
    endpoint at its maximum from ~5 requests/s). SageMaker creates the endpoint's log group
    /aws/sagemaker/Endpoints/NAME with no retention (CloudWatch Logs keeps it forever);
    PutRetentionPolicy takes one of CloudWatch's periods."""
    endpoint = f"ep-{unique_name}"
    common = ["--endpoint-name", endpoint, "--parameter-name", f"/t/{unique_name}"]
    argv = ["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE, *common]
    assert main(argv) == 0
    [policy] = boto3.client("application-autoscaling").describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=f"endpoint/{endpoint}/variant/v2"
    )["ScalingPolicies"]
    target = policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"]
    assert target == 318 * 0.5 * 60 == 9540
    groups = boto3.client("logs").describe_log_groups(
        logGroupNamePrefix=f"/aws/sagemaker/Endpoints/{endpoint}"
    )["logGroups"]
    assert [(group["logGroupName"], group.get("retentionInDays")) for group in groups] == [
        (f"/aws/sagemaker/Endpoints/{endpoint}", 30)
    ]
    assert main(["deploy", "--mode", "sagemaker", "--delete", *common]) == 0
    # A second deployment of the same name finds the group and sets the chosen retention.
    assert main([*argv, "--log-retention-days", "7"]) == 0
    groups = boto3.client("logs").describe_log_groups(
        logGroupNamePrefix=f"/aws/sagemaker/Endpoints/{endpoint}"
    )["logGroups"]
    assert [group.get("retentionInDays") for group in groups] == [7]
    assert main(["deploy", "--mode", "sagemaker", "--delete", *common]) == 0


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--mode", "sagemaker", "--bucket", "b"], "--role"),
        (["--mode", "local"], "--bucket"),
        (["--mode", "sagemaker", "--bucket", "b", "--role", ROLE, "--min-instances", "5"], "above"),
    ],
)
def test_missing_or_contradictory_options_are_refused(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", *argv, "--region", "us-east-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m training_job deploy: error: ") and complaint in err


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        # Each once went unnoticed: the other mode's action flag was silently ignored, so
        # `--mode sagemaker --stop` created an endpoint and `--mode local --delete` started one.
        (["--mode", "sagemaker", "--stop"], "--stop applies to --mode local only"),
        (["--mode", "local", "--delete"], "--delete applies to --mode sagemaker only"),
        (["--mode", "sagemaker", "--role", ROLE, "--bucket", "b", "--port", "9000"],
         "--port applies to --mode local only"),
        (["--mode", "sagemaker", "--delete", "--foreground"], "--foreground applies to"),
        (["--mode", "local", "--bucket", "b", "--instance-type", "ml.c5.large"],
         "--instance-type applies to --mode sagemaker only"),
        (["--mode", "local", "--stop", "--max-instances", "2"], "--max-instances applies to"),
    ],
)  # fmt: skip
def test_an_option_of_the_other_mode_is_a_usage_error(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", *argv, "--region", "us-east-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m training_job deploy: error: ") and complaint in err
    assert err.count("\n") == 1


def test_no_publish_parameter_leaves_the_stages_parameter_alone(
    bucket: str, unique_name: str
) -> None:
    endpoint = f"ep-{unique_name}"
    parameter = f"/test/{unique_name}/endpoint-name"
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name=parameter, Value="the-live-endpoint", Type="String")
    common = ["--endpoint-name", endpoint, "--parameter-name", parameter, "--no-publish-parameter"]
    create = ["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE, *common]
    assert main(create) == 0
    assert ssm.get_parameter(Name=parameter)["Parameter"]["Value"] == "the-live-endpoint"
    # The one it names is not this endpoint, so a --delete with publishing would keep it
    # too; --no-publish-parameter does not even look.
    assert main(["deploy", "--mode", "sagemaker", "--delete", *common]) == 0
    assert ssm.get_parameter(Name=parameter)["Parameter"]["Value"] == "the-live-endpoint"
    assert boto3.client("sagemaker").list_endpoints(NameContains=endpoint)["Endpoints"] == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--mode", "cloud", "--bucket", "b"],
        ["--mode", "sagemaker", "--bucket", "b", "--endpoint-name", "../etc"],
        ["--mode", "sagemaker", "--bucket", "b", "--endpoint-name", "x" * 64],
        ["--mode", "sagemaker", "--bucket", "b", "--model-version", "0"],
        ["--mode", "sagemaker", "--bucket", "b", "--model-version", "abc"],
        ["--mode", "sagemaker", "--bucket", "b", "--model-group", "no_such group"],
        ["--mode", "local", "--bucket", "b", "--capture-sampling", "101"],
        ["--mode", "local", "--bucket", "b", "--workers", "0"],
        ["--mode", "local", "--bucket", "b", "--max-body-bytes", "-1"],
        # A target of 0 never scales in; past 100x the measured rate it never scales out.
        ["--mode", "sagemaker", "--bucket", "b", "--target-invocations", "0"],
        ["--mode", "sagemaker", "--bucket", "b", "--target-invocations", "1e7"],
        ["--mode", "sagemaker", "--bucket", "b", "--target-invocations", "nan"],
        ["--mode", "sagemaker", "--bucket", "b", "--log-retention-days", "10"],
        # Over InvokeEndpoint's 6 MB: its capture line would be over every reader's cap.
        ["--mode", "local", "--bucket", "b", "--max-body-bytes", "6291457"],
    ],
)
def test_hostile_option_values_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["deploy", *argv])
    assert exited.value.code == 2


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["deploy", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--mode", "--bucket", "--model-group", "--model-version", "--endpoint-name", "--stage",
        "--parameter-name",
        "--role", "--region",
        "--instance-type", "--min-instances", "--max-instances", "--target-invocations",
        "--log-retention-days", "--delete", "--host", "--port", "--workers", "--max-batch",
        "--max-body-bytes",
        "--capture-sampling", "--capture-flush-seconds", "--foreground", "--stop",
    ):  # fmt: skip
        assert option in text


# --- unpacking model.tar.gz -------------------------------------------------------------


def _archive(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


MODEL_FILES = [_file("model.pth"), _file("model.json", b"{}")]


def test_a_model_archive_unpacks_whole(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "model.tar.gz", [*MODEL_FILES, _file("code/inference.py")])
    destination = tmp_path / "model"
    deployment.extract_model(archive, destination)
    assert sorted(p.relative_to(destination).as_posix() for p in destination.rglob("*")) == [
        "code",
        "code/inference.py",
        "model.json",
        "model.pth",
    ]


@pytest.mark.parametrize(
    ("entries", "complaint"),
    [
        ([*MODEL_FILES, _file("../evil.py")], "outside"),
        ([*MODEL_FILES, _file("/etc/evil")], "outside"),
        ([*MODEL_FILES, _file("code/../../evil")], "outside"),
        ([*MODEL_FILES, _link("code/x", "/etc/passwd", tarfile.SYMTYPE)], "link"),
        ([*MODEL_FILES, _link("code/y", "model.pth", tarfile.LNKTYPE)], "link"),
        ([*MODEL_FILES, _link("fifo", "", tarfile.FIFOTYPE)], "special"),
        ([_file("model.pth")], "model.json"),
        ([], "model.pth"),
    ],
)
def test_unsafe_or_incomplete_archives_are_refused_and_nothing_is_written(
    tmp_path: Path, entries: list[Any], complaint: str
) -> None:
    archive = _archive(tmp_path / "model.tar.gz", entries)
    destination = tmp_path / "out" / "model"
    destination.parent.mkdir()
    with pytest.raises(deployment.DeployError, match=complaint):
        deployment.extract_model(archive, destination)
    assert list(destination.parent.iterdir()) == []
    assert not (tmp_path / "evil.py").exists()


@pytest.mark.parametrize("content", [b"", b"not a tarball", b"\x1f\x8b\x08\x00truncated gzip"])
def test_unreadable_archives_are_refused(tmp_path: Path, content: bytes) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(content)
    with pytest.raises(deployment.DeployError, match="not a readable"):
        deployment.extract_model(archive, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_each_stage_publishes_its_own_parameter(bucket: str, unique_name: str) -> None:
    endpoint = f"ep-{unique_name}"
    stage = f"s{unique_name[-8:]}"
    create = ["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE]
    assert main([*create, "--endpoint-name", endpoint, "--stage", stage]) == 0
    ssm = boto3.client("ssm")
    name = f"/scones-unlimited/{stage}/endpoint-name"
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == endpoint
    with pytest.raises(ClientError, match="ParameterNotFound"):
        ssm.get_parameter(Name=f"/scones-unlimited/{stage}-prod/endpoint-name")
    assert main(["deploy", "--mode", "sagemaker", "--delete", "--endpoint-name", endpoint,
                 "--stage", stage]) == 0  # fmt: skip
    with pytest.raises(ClientError, match="ParameterNotFound"):
        ssm.get_parameter(Name=name)


@pytest.mark.parametrize("percent", ["0.5", "33.3"])
def test_a_fractional_capture_percentage_is_refused_not_truncated(
    bucket: str, unique_name: str, percent: str, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"ep-{unique_name}"
    argv = ["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE,
            "--endpoint-name", endpoint, "--capture-sampling", percent]  # fmt: skip
    assert main(argv) == 2
    assert "not a whole percentage" in capsys.readouterr().err
    assert boto3.client("sagemaker").list_endpoints(NameContains=endpoint)["Endpoints"] == []


def test_a_builtin_archive_under_the_pytorch_image_is_refused_with_the_reason(
    bucket: str, unique_name: str, group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    register_output(bucket, "scones-builtin-1", group, status=registry.APPROVED, archive=BUILTIN)
    endpoint = f"ep-{unique_name}"
    argv = ["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE,
            "--endpoint-name", endpoint]  # fmt: skip
    assert main(argv) == 1  # the newest approved version holds the built-in algorithm's model
    err = capsys.readouterr().err
    assert "has no model.pth, model.json, code/inference.py" in err
    assert "--algorithm builtin" in err
    sm = boto3.client("sagemaker")
    assert sm.list_models(NameContains=endpoint)["Models"] == []
    assert sm.list_endpoints(NameContains=endpoint)["Endpoints"] == []


def test_a_builtin_version_is_served_with_its_own_image(
    bucket: str, unique_name: str, group: str
) -> None:
    version = register_output(
        bucket, "scones-builtin-2", group, metrics={"test_accuracy": 0.9},
        status=registry.APPROVED, archive=BUILTIN, algorithm="builtin",
    )  # fmt: skip
    endpoint = f"ep-{unique_name}"
    common = ["--endpoint-name", endpoint, "--parameter-name", f"/t/{unique_name}"]
    assert main(["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE,
                 *common]) == 0  # fmt: skip
    variant, model = served_model(endpoint)
    assert (variant, model["PrimaryContainer"]["ModelPackageName"]) == ("v4", version.arn)
    assert "image-classification" in version.image
    assert main(["deploy", "--mode", "sagemaker", "--delete", *common]) == 0


class EndpointsThatFail:
    """The local AWS's SageMaker client, except that endpoints end Failed, as a real one
    does when its container never answers /ping: every request still reaches the local
    AWS, so what deploy creates and removes is real state there."""

    REASON = "The primary container for production variant AllTraffic did not pass the ping"

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def describe_endpoint(self, **kwargs: Any) -> dict[str, Any]:
        described: dict[str, Any] = self._client.describe_endpoint(**kwargs)
        return {**described, "EndpointStatus": "Failed", "FailureReason": self.REASON}


def test_an_endpoint_that_ends_failed_is_a_clear_error_and_nothing_is_left(
    bucket: str, unique_name: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    real_client = boto3.session.Session.client

    def client(self: Any, service: str, *args: Any, **kwargs: Any) -> Any:
        made = real_client(self, service, *args, **kwargs)
        return EndpointsThatFail(made) if service == "sagemaker" else made

    monkeypatch.setattr(boto3.session.Session, "client", client)
    endpoint = f"ep-{unique_name}"
    parameter = f"/t/{unique_name}"
    argv = ["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE,
            "--endpoint-name", endpoint, "--parameter-name", parameter]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"endpoint {endpoint} is Failed: {EndpointsThatFail.REASON}" in err
    assert "removed what this deploy created" in err
    monkeypatch.undo()
    sm = boto3.client("sagemaker")
    assert sm.list_endpoints(NameContains=endpoint)["Endpoints"] == []
    assert sm.list_endpoint_configs(NameContains=endpoint[:40])["EndpointConfigs"] == []
    assert sm.list_models(NameContains=endpoint[:40])["Models"] == []
    with pytest.raises(ClientError, match="ParameterNotFound"):
        boto3.client("ssm").get_parameter(Name=parameter)


def test_deleting_the_old_endpoint_after_a_blue_green_rollout_keeps_the_new_name(
    bucket: str, unique_name: str
) -> None:
    parameter = f"/t/{unique_name}"
    blue, green = f"blue-{unique_name}", f"green-{unique_name}"
    for endpoint in (blue, green):  # green publishes last: the workflow now invokes it
        create = ["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE]
        assert main([*create, "--endpoint-name", endpoint, "--parameter-name", parameter]) == 0
    delete = ["deploy", "--mode", "sagemaker", "--delete", "--parameter-name", parameter]
    assert main([*delete, "--endpoint-name", blue]) == 0
    assert boto3.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"] == green
    assert main([*delete, "--endpoint-name", green]) == 0
    with pytest.raises(ClientError, match="ParameterNotFound"):
        boto3.client("ssm").get_parameter(Name=parameter)


def test_deploy_publishes_the_models_baseline_where_the_monitor_reads_it(
    bucket: str, unique_name: str, group: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handlers import monitor

    baseline = known_baseline()
    archive = _archive(
        tmp_path / "model.tar.gz",
        [
            *MODEL_FILES,
            _file("code/inference.py"),
            _file("baseline.json", baseline),
        ],
    )
    s3 = boto3.client("s3")
    register_output(bucket, "job-4", group, status=registry.APPROVED, archive=archive.read_bytes())
    endpoint = f"ep-{unique_name}"
    argv = ["deploy", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE]
    argv += ["--endpoint-name", endpoint, "--parameter-name", f"/test/{unique_name}/ep"]
    argv += ["--model-version", "4"]
    assert main(argv) == 0
    key = f"monitoring/{endpoint}/baseline.json"  # serverless.yml's default BASELINE_KEY
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == baseline

    for name, value in {
        "CAPTURE_BUCKET": bucket,
        "CAPTURE_PREFIX": f"data_capture/{endpoint}/",
        "ENDPOINT_NAME": endpoint,
        "BASELINE_KEY": key,
        "METRIC_NAMESPACE": f"Test/{unique_name}",
    }.items():
        monkeypatch.setenv(name, value)
    assert "waiting_for" not in monitor.handler({}, None)  # the first run has its baseline
    delete = ["deploy", "--mode", "sagemaker", "--delete", "--endpoint-name", endpoint]
    assert main([*delete, "--parameter-name", f"/test/{unique_name}/ep"]) == 0


@pytest.mark.parametrize("problem", ["missing bucket", "state dir under a file"])
def test_a_local_deploy_that_cannot_work_is_refused_before_anything_is_made(
    bucket: str, unique_name: str, tmp_path: Path, problem: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Issue 24 item 7: with a missing bucket the endpoint was started, InService and
    answering, its parameter published, and every capture upload failed; deploy exited 1
    and left it all running. Like --mode sagemaker, local mode checks first."""
    endpoint = f"ep-{unique_name}"
    parameter = f"/test/{unique_name}/endpoint-name"
    state_dir = tmp_path / "state"
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    used_bucket, used_state_dir, complaint = {
        "missing bucket": (
            f"{bucket}-missing",
            state_dir,
            f"bucket {bucket}-missing does not exist",
        ),
        "state dir under a file": (bucket, a_file / "state", f"{a_file} is not a folder"),
    }[problem]
    code = main(
        ["deploy", "--mode", "local", "--bucket", used_bucket, "--endpoint-name", endpoint,
         "--parameter-name", parameter, "--state-dir", str(used_state_dir), "--region", "us-east-1"]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m training_job deploy: error: ") and complaint in err, err
    assert err.count("\n") == 1
    assert not state_dir.exists()  # no pid, log or model
    assert boto3.client("sagemaker").list_models(NameContains=endpoint[:40])["Models"] == []
    with pytest.raises(ClientError, match="ParameterNotFound"):
        boto3.client("ssm").get_parameter(Name=parameter)
