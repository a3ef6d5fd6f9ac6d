"""One region for every step: each command takes `--region` (else $AWS_REGION, else boto3's
resolution), and a bucket in another region is refused before anything is created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.conftest import REPO_ROOT
from tests.training_job.registry_helpers import record_image_in, register_output
from training_job.__main__ import COMMANDS, build_parser, main
from training_job.environment import overridden
from training_job.models import registry

ROLE = "arn:aws:iam::123456789012:role/scones-sagemaker"


def test_every_command_and_subcommand_takes_region() -> None:
    parser = build_parser()
    for argv in (
        ["stage", "--bucket", "b"],
        ["train", "--mode", "local", "--bucket", "b"],
        ["deploy", "--mode", "local"],
        ["evaluate", "--state-machine", "m", "--images", "s3://b/t/", "--labels", "s3://b/t.lst"],
        ["monitor", "check", "--captures", "s3://b/data_capture/e/"],
    ):
        assert argv[0] in COMMANDS
        assert parser.parse_args([*argv, "--region", "eu-west-1"]).region == "eu-west-1"


def test_no_region_anywhere_is_a_usage_error_not_a_guess(tmp_path: object) -> None:
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"}
    }
    # No profile either: an empty config file.
    environment["AWS_CONFIG_FILE"] = os.devnull
    result = subprocess.run(
        [sys.executable, "-m", "training_job", "deploy", "--mode", "sagemaker", "--delete"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no AWS region: pass --region or set AWS_REGION" in result.stderr


def test_a_missing_profile_is_a_usage_error_not_a_traceback() -> None:
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"AWS_REGION", "AWS_DEFAULT_REGION"}
    }
    environment["AWS_PROFILE"] = "no-such-profile-here"
    environment["AWS_CONFIG_FILE"] = os.devnull
    result = subprocess.run(
        [sys.executable, "-m", "training_job", "deploy", "--mode", "sagemaker", "--delete"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no-such-profile-here" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def bucket_in_eu(
    local_aws: dict[str, str], unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A bucket in eu-west-1 with an approved version of a model group there."""
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(
        Bucket=unique_name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    group = f"g-{unique_name}"
    monkeypatch.setattr(registry, "DEFAULT_GROUP", group)
    record_image_in("eu-west-1")
    with overridden({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1"}):
        register_output(unique_name, "job-1", group, status=registry.APPROVED)
    return unique_name


def test_stage_refuses_a_bucket_in_another_region_and_changes_nothing(
    bucket_in_eu: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["stage", "--bucket", bucket_in_eu, "--region", "us-west-2"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"bucket {bucket_in_eu} is in eu-west-1, but this command runs in us-west-2" in err
    s3 = boto3.client("s3", region_name="eu-west-1")
    with pytest.raises(s3.exceptions.ClientError):
        s3.get_bucket_policy(Bucket=bucket_in_eu)  # no settings were applied


def test_deploy_refuses_a_bucket_in_another_region_before_creating_anything(
    bucket_in_eu: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"ep-{unique_name}"
    code = main(
        [
            "deploy",
            "--mode",
            "sagemaker",
            "--bucket",
            bucket_in_eu,
            "--role",
            ROLE,
            "--endpoint-name",
            endpoint,
            "--region",
            "us-west-2",
        ]
    )
    assert code == 1
    assert "is in eu-west-1, but this command runs in us-west-2" in capsys.readouterr().err
    for region in ("us-west-2", "eu-west-1"):
        sm = boto3.client("sagemaker", region_name=region)
        assert sm.list_models(NameContains=endpoint[:40])["Models"] == []
        assert sm.list_endpoints(NameContains=endpoint)["Endpoints"] == []


def test_a_local_deploy_refuses_a_bucket_in_another_region_before_starting_anything(
    bucket_in_eu: str, unique_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Local mode applies the region rule as --mode sagemaker does (issue 24 item 7).
    endpoint = f"ep-{unique_name}"
    code = main(
        ["deploy", "--mode", "local", "--bucket", bucket_in_eu, "--endpoint-name", endpoint,
         "--state-dir", str(tmp_path / "state"), "--region", "us-west-2"]
    )  # fmt: skip
    assert code == 1
    assert "is in eu-west-1, but this command runs in us-west-2" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
    for region in ("us-west-2", "eu-west-1"):
        sm = boto3.client("sagemaker", region_name=region)
        assert sm.list_models(NameContains=endpoint[:40])["Models"] == []


def test_evaluate_refuses_images_in_another_region_before_starting_executions(
    bucket_in_eu: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["evaluate", "--state-machine", "scones", "--images", f"s3://{bucket_in_eu}/test/",
         "--labels", f"s3://{bucket_in_eu}/test.lst", "--region", "us-west-2"]
    )  # fmt: skip
    assert code == 1
    assert "is in eu-west-1, but this command runs in us-west-2" in capsys.readouterr().err


def test_models_register_refuses_an_output_in_another_region(
    bucket_in_eu: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    group = f"other-{unique_name}"
    code = main(
        ["models", "register", "--model-data",
         f"s3://{bucket_in_eu}/models/job-1/output/model.tar.gz", "--manifest",
         f"s3://{bucket_in_eu}/manifest.json", "--model-group", group, "--region", "us-west-2"]
    )  # fmt: skip
    assert code == 1
    assert "is in eu-west-1, but this command runs in us-west-2" in capsys.readouterr().err
    sm = boto3.client("sagemaker", region_name="us-west-2")
    assert sm.list_model_package_groups(NameContains=group)["ModelPackageGroupSummaryList"] == []


def test_train_refuses_a_bucket_in_another_region(
    bucket_in_eu: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["train", "--mode", "sagemaker", "--bucket", bucket_in_eu, "--role", ROLE,
         "--region", "us-west-2"]
    )  # fmt: skip
    assert code == 1
    assert "is in eu-west-1, but this command runs in us-west-2" in capsys.readouterr().err


def test_deploy_in_the_buckets_region_lands_there(
    bucket_in_eu: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"ep-{unique_name}"
    parameter = f"/test/{unique_name}/endpoint-name"
    code = main(
        ["deploy", "--mode", "sagemaker", "--bucket", bucket_in_eu, "--role", ROLE,
         "--endpoint-name", endpoint, "--parameter-name", parameter, "--region", "eu-west-1"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    eu = boto3.client("sagemaker", region_name="eu-west-1")
    assert eu.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "InService"
    us = boto3.client("sagemaker", region_name="us-east-1")
    assert us.list_endpoints(NameContains=endpoint)["Endpoints"] == []
    ssm = boto3.client("ssm", region_name="eu-west-1")
    assert ssm.get_parameter(Name=parameter)["Parameter"]["Value"] == endpoint
