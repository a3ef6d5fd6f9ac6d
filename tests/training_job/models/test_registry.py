"""The model registry against the local AWS: what a version carries, the `models`
commands (list, show, approve, reject, register) and their refusals, and the rules the
local AWS holds SageMaker's registry to."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.training_job.registry_helpers import METRICS, put_training_output, register_output
from training_job.__main__ import main
from training_job.models import registry, serving_image


@pytest.fixture
def bucket(local_aws: dict[str, str], unique_name: str) -> str:
    boto3.client("s3").create_bucket(Bucket=unique_name)
    return unique_name


@pytest.fixture
def group(unique_name: str) -> str:
    return f"g-{unique_name}"


def test_a_registered_version_carries_its_metrics_data_and_commit_pending_approval(
    bucket: str, group: str
) -> None:
    version = register_output(bucket, "job-1", group)
    sm = boto3.client("sagemaker")
    described = sm.describe_model_package(ModelPackageName=version.arn)
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert described["ModelPackageGroupName"] == group
    assert described["ModelPackageVersion"] == 1
    assert described["CustomerMetadataProperties"] == {
        "test_accuracy": "0.9550",
        "calibration_error": "0.0312",
        "share_past_gate": "0.8100",
        "accuracy_past_gate": "0.9938",
        "training_job": "job-1",
        "algorithm": "pytorch",
        "training_data_manifest": f"s3://{bucket}/manifest.json",
        "code_commit": METRICS["git_commit"],
    }
    assert described["MetadataProperties"]["CommitId"] == METRICS["git_commit"]
    [container] = described["InferenceSpecification"]["Containers"]
    assert container["ModelDataUrl"] == f"s3://{bucket}/models/job-1/output/model.tar.gz"
    # The project's serving image by digest, as recorded in the region (the local AWS
    # records this checkout's at start), and what runs inside it.
    assert container["Image"] == serving_image.recorded_image(boto3.client("ssm"))
    assert serving_image.is_serving_image(container["Image"])
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    # The quality report in S3 is the one the version's digest names.
    statistics = described["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["S3Uri"] == f"s3://{bucket}/models/job-1/output/model-quality.json"
    body = (
        boto3.client("s3")
        .get_object(Bucket=bucket, Key="models/job-1/output/model-quality.json")["Body"]
        .read()
    )
    assert statistics["ContentDigest"] == f"sha256:{hashlib.sha256(body).hexdigest()}"
    report = json.loads(body)
    assert report["test_accuracy"] == 0.955
    assert report["accuracy_past_gate"] == 0.9938
    assert report["training_data_manifest"] == f"s3://{bucket}/manifest.json"
    assert report["code_commit"] == METRICS["git_commit"]


def test_missing_figures_and_commit_are_shown_as_such(bucket: str, group: str) -> None:
    version = register_output(bucket, "old-job", group, metrics={"test_accuracy": 0.9})
    assert version.metadata["share_past_gate"] == "n/a"
    assert version.metadata["code_commit"] == "unknown: the training job recorded no commit"


def test_the_builtin_algorithm_version_carries_its_own_image(bucket: str, group: str) -> None:
    version = register_output(
        bucket, "builtin-1", group, metrics={"test_accuracy": 0.91}, algorithm="builtin"
    )
    assert "image-classification" in version.image
    assert not serving_image.is_pytorch_image(version.image)


def test_list_shows_versions_side_by_side_newest_first(
    bucket: str, group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    register_output(bucket, "job-a", group)
    register_output(bucket, "job-b", group, metrics={**METRICS, "test_accuracy": 0.97})
    capsys.readouterr()  # what registering printed
    assert main(["models", "list", "--model-group", group]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["version", "status"]
    assert lines[1].split()[:2] == ["2", "PendingManualApproval"]
    assert "0.9700" in lines[1] and "job-b" in lines[1]
    assert lines[2].split()[:2] == ["1", "PendingManualApproval"]
    assert "0.9550" in lines[2] and "0.8100" in lines[2] and "0123456789ab" in lines[2]
    assert "serves none of these versions" in lines[-1]


def test_approve_and_reject_record_the_reason(
    bucket: str, group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    register_output(bucket, "job-a", group)
    register_output(bucket, "job-b", group)
    assert main(["models", "approve", "1", "--model-group", group,
                 "--description", "best ECE; checked the confusion matrix"]) == 0  # fmt: skip
    assert "PendingManualApproval -> Approved" in capsys.readouterr().out
    assert main(["models", "reject", "2", "--model-group", group,
                 "--description", "worse past the gate"]) == 0  # fmt: skip
    sm = boto3.client("sagemaker")
    one, two = registry.version(sm, group, 1), registry.version(sm, group, 2)
    assert (one.status, one.approval_description) == (
        "Approved",
        "best ECE; checked the confusion matrix",
    )
    assert (two.status, two.approval_description) == ("Rejected", "worse past the gate")
    # The figures shown side by side survive the update.
    assert one.metadata["test_accuracy"] == "0.9550"
    # SageMaker lets a rejected version be approved later; the reason is recorded.
    assert main(["models", "approve", "2", "--model-group", group,
                 "--description", "re-checked"]) == 0  # fmt: skip
    assert registry.version(sm, group, 2).status == "Approved"
    assert main(["models", "show", "2", "--model-group", group]) == 0
    out = capsys.readouterr().out
    assert "re-checked" in out and "Rejected -> Approved" in out
    assert f"s3://{bucket}/manifest.json" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "approve", "0", "--description", "x"],
        ["models", "approve", "-1", "--description", "x"],
        ["models", "approve", "1.5", "--description", "x"],
        ["models", "approve", "1e3", "--description", "x"],
        ["models", "approve", "9" * 40, "--description", "x"],
        ["models", "approve", "1"],  # a reason is required
        ["models", "show", "abc"],
        ["models", "list", "--limit", "0"],
        ["models", "list", "--model-group", "bad_name!"],
        ["models", "list", "--model-group", "x" * 64],
        ["models", "list", "--endpoint-name", "../etc"],
        ["models", "register", "--model-data", "/tmp/model.tar.gz", "--manifest", "s3://b/m"],
        ["models"],
    ],
)
def test_bad_command_lines_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--region", "us-east-1"])
    assert exited.value.code == 2


@pytest.mark.parametrize(
    ("description", "complaint"),
    [
        ("x" * 1025, "1025 characters; SageMaker keeps at most 1024"),
        ("two\nlines", "one line"),
        ("bell\x07", "one line"),
        ("", "--description is empty"),
        ("   ", "--description is empty"),
    ],
)
def test_hostile_descriptions_are_refused_and_nothing_changes(
    bucket: str, group: str, description: str, complaint: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    register_output(bucket, "job-a", group)
    code = main(["models", "approve", "1", "--model-group", group, "--description", description])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m training_job models: error: ") and complaint in err
    assert err.count("\n") == 1  # one line, however long the description
    assert registry.version(boto3.client("sagemaker"), group, 1).status == "PendingManualApproval"


def test_an_unknown_version_or_group_is_a_clear_error(
    bucket: str, group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list", "--model-group", group]) == 1
    assert f"no model group {group}" in capsys.readouterr().err
    register_output(bucket, "job-a", group)
    assert main(["models", "approve", "7", "--model-group", group, "--description", "x"]) == 1
    assert f"model group {group} has no version 7 (versions: 1)" in capsys.readouterr().err


def test_register_makes_a_version_of_an_existing_training_output(
    bucket: str, group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model_data = put_training_output(bucket, "scones-pytorch-2026-01-01", METRICS)
    argv = ["models", "register", "--model-data", model_data,
            "--manifest", f"s3://{bucket}/manifest.json", "--model-group", group]  # fmt: skip
    assert main(argv) == 0
    assert "as version 1 of" in capsys.readouterr().out
    version = registry.version(boto3.client("sagemaker"), group, 1)
    assert version.metadata["training_job"] == "scones-pytorch-2026-01-01"
    # An output without its metrics.json is refused, and registers nothing.
    boto3.client("s3").delete_object(
        Bucket=bucket, Key="models/scones-pytorch-2026-01-01/output/metrics.json"
    )
    assert main(argv) == 1
    assert "cannot read" in capsys.readouterr().err
    assert len(registry.summaries(boto3.client("sagemaker"), group)) == 1


# --- the local AWS holds the registry to SageMaker's rules ------------------------------


def test_a_model_is_made_only_from_an_approved_version(bucket: str, group: str) -> None:
    sm = boto3.client("sagemaker")
    version = register_output(bucket, "job-a", group)
    container = {"ModelPackageName": version.arn}
    with pytest.raises(ClientError) as refused:
        sm.create_model(ModelName=f"m-{group}", PrimaryContainer=container)
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "must be Approved" in refused.value.response["Error"]["Message"]
    registry.set_status(sm, version, "Approved", "ok")
    sm.create_model(ModelName=f"m-{group}", PrimaryContainer=container)
    sm.delete_model(ModelName=f"m-{group}")


@pytest.mark.parametrize(
    "properties",
    [
        {f"k{i}": "v" for i in range(51)},
        {"k" * 129: "v"},
        {"k": "v" * 257},
        {"k": "not (allowed)"},  # (an empty value botocore refuses before sending)
        {"k": "two\nlines"},
    ],
)
def test_metadata_over_sagemakers_limits_is_refused(
    group: str, local_aws: dict[str, str], properties: dict[str, str]
) -> None:
    sm = boto3.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName=group)
    with pytest.raises(ClientError, match="ValidationException"):
        sm.create_model_package(
            ModelPackageGroupName=group,
            InferenceSpecification={"Containers": [{"Image": "i", "ModelDataUrl": "s3://b/k"}]},
            CustomerMetadataProperties=properties,
        )
    assert sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"] == []


def test_a_group_is_created_once(group: str, local_aws: dict[str, str]) -> None:
    sm = boto3.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName=group)
    with pytest.raises(ClientError, match="already exists"):
        sm.create_model_package_group(ModelPackageGroupName=group)


@pytest.mark.parametrize("subcommand", ["list", "show", "approve", "reject", "register"])
def test_each_models_subcommand_explains_itself(
    subcommand: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["models", subcommand, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "--model-group" in text and "--region" in text
    if subcommand in ("approve", "reject"):
        assert "--description" in text and "1,024" in text


def test_list_as_json_gives_each_version_and_what_serves_it(
    bucket: str, group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    register_output(bucket, "job-a", group)
    capsys.readouterr()
    assert main(["models", "list", "--model-group", group, "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    listed = json.loads(line)
    assert (listed["version"], listed["status"], listed["deployed_variant"]) == (
        1,
        "PendingManualApproval",
        None,
    )
    assert listed["metadata"]["accuracy_past_gate"] == "0.9938"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.95123, "0.9512"),
        (None, "n/a"),
        (True, "true"),
        ("unknown: git failed (TimeoutExpired)", "unknown: git failed _TimeoutExpired_"),
        ("a\nb\x00c", "a_b_c"),
        ("", "n/a"),
        ("x" * 300, "x" * 256),
    ],
)
def test_metadata_values_are_what_sagemaker_takes(value: object, shown: str) -> None:
    assert registry.metadata_value(value) == shown
