"""`python -m training_job train`: local mode runs the image's training program
(training_job/code/container.py) as SageMaker would; SageMaker mode creates the jobs the
reference does, --algorithm pytorch in the project's own image (checked against the local
AWS)."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.conftest import REPO_ROOT
from tests.staged_sample import keys_under, read_object, stage_sample, tar_members
from tests.training_job.training.launch_helpers import (
    IMAGE_DIGEST,
    IMAGE_REPOSITORY,
    ROLE,
    channel_uris,
    describe,
    launch,
)
from training_job.models import registry
from training_job.training import launch as train
from training_job.training import sagemaker_job

TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 10


@pytest.fixture(scope="module")
def bucket(local_aws: dict[str, str], shared_data: Path) -> str:
    name = "launcher-sample"
    stage_sample(name, shared_data, train=TRAIN_PER_CLASS, test=TEST_PER_CLASS)
    return name


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        launch("--help")
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--bucket", "--prefix", "--mode", "--algorithm", "--job-name", "--work-dir",
        "--epochs", "--batch-size", "--learning-rate", "--seed", "--hyperparameter",
        "--role", "--instance-type", "--wait", "--no-wait",
    ):  # fmt: skip
        assert option in text


def test_help_through_the_command_dispatcher() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "training_job", "train", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--mode {local,sagemaker}" in done.stdout


@pytest.mark.slow
def test_local_mode_trains_with_the_real_script_and_uploads_the_artifacts(
    bucket: str, unique_name: str, one_cpu: None, capfd: pytest.CaptureFixture[str]
) -> None:
    group = f"g-{unique_name}"
    assert (
        launch("--mode", "local", "--bucket", bucket, "--job-name", unique_name, "--epochs", "1",
               "--model-group", group)
        == 0
    )  # fmt: skip
    out = capfd.readouterr().out
    base = f"models/{unique_name}/output/"
    assert keys_under(bucket, f"models/{unique_name}/") == [
        base + "metrics.json",
        base + "model-quality.json",  # the registry version's quality report
        base + "model.tar.gz",
        base + "output.tar.gz",
    ]
    model = tar_members(read_object(bucket, base + "model.tar.gz"))
    assert {"model.pth", "model.json", "metrics.json", "code/inference.py"} <= set(model)
    metrics = json.loads(read_object(bucket, base + "metrics.json"))
    assert json.loads(model["metrics.json"] or b"") == metrics
    assert metrics["classes"] == ["bicycle", "motorcycle"]
    assert metrics["epochs"] == 1
    assert metrics["counts"]["test"] == 2 * TEST_PER_CLASS
    assert metrics["git_commit"] != "unknown"
    assert "test metrics:" in out
    assert f"accuracy  {metrics['test_accuracy']:.4f}" in out
    assert "confusion matrix" in out and "motorcycle" in out
    # The model is a registry version, pending approval, with its test metrics attached.
    assert f"registered as version 1 of model group {group} (PendingManualApproval)" in out
    version = registry.version(boto3.client("sagemaker"), group, 1)
    assert version.metadata["test_accuracy"] == f"{metrics['test_accuracy']:.4f}"
    assert version.metadata["share_past_gate"] == f"{metrics['share_past_gate']:.4f}"
    assert version.metadata["training_data_manifest"] == f"s3://{bucket}/manifest.json"
    assert version.commit == metrics["git_commit"]


def test_local_mode_failure_reports_the_script_error_and_uploads_nothing(
    bucket: str, unique_name: str, one_cpu: None, capfd: pytest.CaptureFixture[str]
) -> None:
    code = launch(
        "--mode", "local", "--bucket", bucket, "--job-name", unique_name, "-H", "translate=99"
    )
    err = capfd.readouterr().err
    assert code == 2  # train.py's own exit status for a bad hyperparameter
    assert f"training job {unique_name} failed with exit code 2" in err
    assert "--translate must be 0 to 8 pixels" in err
    assert keys_under(bucket, f"models/{unique_name}/") == []


def test_sagemaker_pytorch_job_runs_the_recorded_project_image_by_digest(
    bucket: str, unique_name: str, recorded_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bring-your-own training image ("How Amazon SageMaker AI Runs Your Training Image":
    SageMaker runs it as `docker run IMAGE train`), the one `image push` recorded: the
    same container that serves, not AWS's PyTorch 2.6 training image."""
    code = launch(
        "--bucket", bucket, "--mode", "sagemaker", "--role", ROLE, "--job-name", unique_name,
        "--epochs", "3", "--learning-rate", "0.1", "--seed", "7", "--no-wait",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    job = describe(unique_name)
    assert job["AlgorithmSpecification"]["TrainingImage"] == recorded_image
    assert recorded_image == f"{IMAGE_REPOSITORY}@{IMAGE_DIGEST}"
    assert job["RoleArn"] == ROLE
    assert job["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    # Sized to the job (an hour), not SageMaker's default day; Debugger and Profiler off.
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 3600
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{bucket}/models/"
    assert channel_uris(job) == {
        "train": (f"s3://{bucket}/train/", None),
        "train_lst": (f"s3://{bucket}/train.lst", None),
        "test": (f"s3://{bucket}/test/", None),
        "test_lst": (f"s3://{bucket}/test.lst", None),
    }
    # JSON-encoded, as local mode writes them and container.py decodes them; nothing else
    # (train.py's own defaults apply), and no script-mode sagemaker_* entries.
    assert job["HyperParameters"] == {
        "epochs": "3",
        "lr": "0.1",
        "seed": "7",
        "classes": '"bicycle,motorcycle"',
    }
    # The code is the image's: no source archive is uploaded beside the job's output.
    assert keys_under(bucket, f"models/{unique_name}/") == []


def test_sagemaker_pytorch_is_refused_before_anything_without_a_recorded_image(
    bucket: str, unique_name: str, no_recorded_image: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = launch(
        "--bucket", bucket, "--mode", "sagemaker", "--role", ROLE, "--job-name", unique_name,
        "--no-wait",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "no serving image recorded in us-east-1" in err
    assert "python -m training_job image push" in err
    with pytest.raises(ClientError):
        describe(unique_name)
    assert keys_under(bucket, f"models/{unique_name}/") == []
    # The built-in algorithm runs AWS's own image: it needs none of ours.
    assert launch(
        "--bucket", bucket, "--mode", "sagemaker", "--algorithm", "builtin", "--role", ROLE,
        "--job-name", f"{unique_name}-b", "--no-wait",
    ) == 0  # fmt: skip


@pytest.mark.parametrize("mode", ["sagemaker", "local"])
def test_training_that_would_register_refuses_before_the_job_without_a_recorded_image(
    bucket: str,
    unique_name: str,
    no_recorded_image: None,
    capsys: pytest.CaptureFixture[str],
    mode: str,
) -> None:
    """A PyTorch version is registered only with the project's image by digest (no
    fallback to AWS's out-of-patch 2.6 container), so `train` checks the region has one
    recorded before it starts a job: an hour of training must not end in a refusal.
    CreateTrainingJob is never called (no job by that name), and nothing is written
    under the job's output."""
    argv = ["--bucket", bucket, "--mode", mode, "--job-name", unique_name]
    if mode == "sagemaker":
        argv += ["--role", ROLE, "--no-wait"]
    assert launch(*argv) == 1
    error = capsys.readouterr().err
    assert "no serving image recorded in us-east-1" in error
    assert "python -m training_job image push --region us-east-1" in error
    with pytest.raises(ClientError, match="Could not find training job"):
        describe(unique_name)
    assert keys_under(bucket, f"models/{unique_name}/") == []


def test_a_sagemaker_job_needs_the_recorded_image_even_when_nothing_is_registered(
    bucket: str, unique_name: str, no_recorded_image: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """--no-register registers nothing, but the job still runs in the project's image."""
    argv = ["--bucket", bucket, "--mode", "sagemaker", "--role", ROLE, "--no-wait"]
    assert launch(*argv, "--job-name", unique_name, "--no-register") == 1
    assert "no serving image recorded in us-east-1" in capsys.readouterr().err
    with pytest.raises(ClientError, match="Could not find training job"):
        describe(unique_name)


def test_a_sagemaker_job_gives_the_training_log_group_a_retention(
    bucket: str, unique_name: str, recorded_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """SageMaker writes every training job's logs to /aws/sagemaker/TrainingJobs and creates
    that group with no retention (CloudWatch Logs keeps it forever); PutRetentionPolicy
    takes one of CloudWatch's periods."""
    logs = boto3.client("logs")
    group = "/aws/sagemaker/TrainingJobs"
    argv = ["--bucket", bucket, "--mode", "sagemaker", "--role", ROLE, "--no-wait"]
    assert launch(*argv, "--job-name", f"{unique_name}-a") == 0, capsys.readouterr().err
    [found] = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert (found["logGroupName"], found.get("retentionInDays")) == (group, 30)
    # The group exists now: the next job sets the retention it is given.
    assert launch(*argv, "--job-name", f"{unique_name}-b", "--log-retention-days", "14") == 0
    [found] = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert found.get("retentionInDays") == 14
    with pytest.raises(SystemExit) as refused:
        launch(*argv, "--log-retention-days", "10")
    assert refused.value.code == 2


@pytest.mark.parametrize("algorithm", ["pytorch", "builtin"])
def test_debugger_and_profiler_are_off_unless_asked(bucket: str, algorithm: str) -> None:
    """moto keeps neither DebugHookConfig nor ProfilerConfig, so the SDK's estimator is
    read: it is what writes them into CreateTrainingJob."""
    parser = argparse.ArgumentParser(prog="python -m training_job")
    train.register(parser.add_subparsers(dest="command", required=True))
    argv = ["train", "--bucket", bucket, "--mode", "sagemaker", "--role", ROLE]
    plan = train.make_plan(parser.parse_args([*argv, "--algorithm", algorithm]))
    ours = f"{IMAGE_REPOSITORY}@{IMAGE_DIGEST}"
    quiet, _ = sagemaker_job.build_estimator(plan, ROLE, "ml.m5.xlarge", training_image=ours)
    assert quiet.debugger_hook_config is False
    assert quiet.disable_profiler is True
    assert quiet.max_run == 3600
    asked, _ = sagemaker_job.build_estimator(plan, ROLE, "ml.m5.xlarge", ours, debugger=True)
    assert asked.debugger_hook_config is not False


def test_sagemaker_builtin_job_matches_the_reference(
    bucket: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = launch(
        "--bucket", bucket, "--mode", "sagemaker", "--algorithm", "builtin", "--role", ROLE,
        "--job-name", unique_name, "--epochs", "30", "--batch-size", "32", "--no-wait",
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    # Not registered yet: it says how to, once the job is done.
    assert (
        f"python -m training_job models register --model-data s3://{bucket}/models/"
        f"{unique_name}/output/model.tar.gz --manifest s3://{bucket}/manifest.json "
        "--algorithm builtin"
    ) in out
    job = describe(unique_name)
    assert job["AlgorithmSpecification"]["TrainingImage"] == (
        "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
    )
    assert job["ResourceConfig"]["InstanceType"] == "ml.p3.2xlarge"
    image = "application/x-image"
    assert channel_uris(job) == {
        "train": (f"s3://{bucket}/train/", image),
        "train_lst": (f"s3://{bucket}/train.lst", image),
        "validation": (f"s3://{bucket}/test/", image),
        "validation_lst": (f"s3://{bucket}/test.lst", image),
    }
    assert job["HyperParameters"] == {
        "image_shape": "3,32,32",
        "num_classes": "2",
        "num_training_samples": str(2 * TRAIN_PER_CLASS),
        "epochs": "30",
        "mini_batch_size": "32",
    }


def test_sagemaker_wait_reads_metrics_out_of_the_model_and_copies_them_beside_it(
    bucket: str, unique_name: str, recorded_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The local AWS "completes" a job without running it: put its model where it would be.
    metrics = {
        "test_accuracy": 0.955,
        "expected_calibration_error": 0.02,
        "classes": ["bicycle", "motorcycle"],
        "per_class": {"bicycle": {"precision": 0.96, "recall": 0.95, "f1": 0.955, "support": 100}},
        "confusion_matrix": [[95, 5], [4, 96]],
        "training_seconds": 12.5,
    }
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        body = json.dumps(metrics).encode()
        info = tarfile.TarInfo("metrics.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    key = f"models/{unique_name}/output/model.tar.gz"
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=archive.getvalue())

    group = f"g-{unique_name}"
    code = launch(
        "--bucket", bucket, "--mode", "sagemaker", "--role", ROLE, "--job-name", unique_name,
        "--model-group", group,
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert json.loads(read_object(bucket, f"models/{unique_name}/output/metrics.json")) == metrics
    assert "accuracy  0.9550" in out and "ECE       0.0200" in out
    assert "bicycle" in out and "95" in out and "96" in out
    # Registered from the metrics it copied beside the model, pending approval.
    version = registry.version(boto3.client("sagemaker"), group, 1)
    assert version.status == "PendingManualApproval"
    assert version.metadata["test_accuracy"] == "0.9550"
    assert version.metadata["calibration_error"] == "0.0200"
    assert version.metadata["share_past_gate"] == "n/a"  # these metrics predate the gate's
    assert version.commit == "unknown: the training job recorded no commit"


def test_no_register_trains_without_touching_the_registry(
    bucket: str, unique_name: str, recorded_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        body = json.dumps({"test_accuracy": 0.9}).encode()
        info = tarfile.TarInfo("metrics.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    key = f"models/{unique_name}/output/model.tar.gz"
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=archive.getvalue())
    group = f"g-{unique_name}"
    code = launch(
        "--bucket", bucket, "--mode", "sagemaker", "--role", ROLE, "--job-name", unique_name,
        "--model-group", group, "--no-register",
    )  # fmt: skip
    assert code == 0
    assert "registered" not in capsys.readouterr().out
    with pytest.raises(ClientError):
        boto3.client("sagemaker").describe_model_package_group(ModelPackageGroupName=group)


def test_sagemaker_wait_without_a_model_is_one_clear_error(
    bucket: str, unique_name: str, recorded_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = launch(
        "--bucket", bucket, "--mode", "sagemaker", "--role", ROLE, "--job-name", unique_name
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot read s3://{bucket}/models/{unique_name}/output/model.tar.gz" in err
    assert "Traceback" not in err


def test_missing_bucket_says_to_stage_first(
    local_aws: dict[str, str], unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert launch("--mode", "local", "--bucket", unique_name) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"bucket {unique_name} does not exist" in err and "training_job stage" in err


def test_bucket_without_manifest_says_to_stage_first(
    local_aws: dict[str, str], unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("s3").create_bucket(Bucket=unique_name)
    assert launch("--mode", "local", "--bucket", unique_name, "--prefix", "runs/a") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"s3://{unique_name}/runs/a/manifest.json not found" in err
    assert (
        f"run `python -m training_job stage --bucket {unique_name} --prefix runs/a/` first" in err
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "manifest is not JSON"),
        (b"\xff\xfe garbage", "manifest is not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"format": 1, "classes": []}).encode(), "classes"),
        (b" " * (train.MAX_MANIFEST_BYTES + 1), "not a manifest"),
    ],
)
def test_malformed_manifest_is_one_clear_error(
    local_aws: dict[str, str],
    unique_name: str,
    body: bytes,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    s3.put_object(Bucket=unique_name, Key="manifest.json", Body=body)
    assert launch("--mode", "local", "--bucket", unique_name) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m training_job train: error: ") and err.count("\n") == 1
    assert message in err
    assert keys_under(unique_name, "models/") == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mode", "sagemaker"], "--mode sagemaker needs --role"),
        (
            ["--mode", "local", "--algorithm", "builtin"],
            "--algorithm builtin runs only with --mode sagemaker",
        ),
        (["--mode", "local", "--job-name", "no_underscores"], "invalid --job-name"),
        (["--mode", "local", "--job-name", "x" * 64], "invalid --job-name"),
        (["--mode", "local", "--hyperparameter", "novalue"], "expects NAME=VALUE"),
        (["--mode", "local", "--hyperparameter", "=3"], "expects NAME=VALUE"),
        (["--mode", "local", "--hyperparameter", "classes=a,b"], "classes come from manifest.json"),
        (["--mode", "local", "--prefix", "bad\nprefix"], "invalid --prefix"),
        # stage's rule (contract.s3), which this command's own copy did not apply: a prefix
        # stage refuses to write is refused here, not read from somewhere else.
        (
            ["--mode", "local", "--prefix", "/runs/a"],
            "invalid --prefix '/runs/a/': a prefix is parts of",
        ),
        (["--mode", "local", "--prefix", "runs a"], "invalid --prefix 'runs a/'"),
        (
            ["--mode", "sagemaker", "--role", ROLE, "--algorithm", "builtin", "--seed", "1"],
            "--seed applies to --algorithm pytorch only",
        ),
        (["--mode", "local", "--role", ROLE], "--role applies to --mode sagemaker only"),
        (["--mode", "local", "--no-wait"], "--wait applies to --mode sagemaker only"),
        (["--mode", "local", "--max-runtime", "5"], "--max-runtime applies to --mode sagemaker"),
        (
            ["--mode", "sagemaker", "--role", ROLE, "--work-dir", "/tmp/job"],
            "--work-dir applies to --mode local only",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    bucket: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert launch("--bucket", bucket, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m training_job train: error: ")
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--algorithm", "xgboost"],
        ["--mode", "cloud"],
        ["--epochs", "many"],
        ["--mode", "local"],  # no --bucket
        ["--bucket", "b"],  # no --mode: neither is a default, as with deploy
    ],
)
def test_argument_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        launch(*argv)
    assert done.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_invalid_bucket_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # The region is named: without one (no local AWS exported AWS_REGION yet, as in the
    # fast tier) the launcher stops at the missing region before it reads the bucket name.
    assert launch("--mode", "local", "--region", "us-east-1", "--bucket", "Not_A_Bucket") == 2
    assert "invalid bucket name" in capsys.readouterr().err
