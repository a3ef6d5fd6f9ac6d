"""The local training runner gives a training program SageMaker's contract for a training
image (`train`, the /opt/ml job directory at --ml-root, channels from S3, the job's name and
Environment) and puts the artifacts where a SageMaker job would."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from local_aws.training import (
    Channel,
    TrainingJob,
    TrainingJobError,
    TrainingJobFailed,
    run_training_job,
    upload_all_or_nothing,
)
from tests.conftest import REPO_ROOT, interruptible
from tests.staged_sample import keys_under, read_object, stage_sample, tar_members


def channels(bucket: str, prefix: str = "") -> list[Channel]:
    base = f"s3://{bucket}/{prefix}"
    return [
        Channel("train", f"{base}train/"),
        Channel("train_lst", f"{base}train.lst"),
        Channel("test", f"{base}test/"),
        Channel("test_lst", f"{base}test.lst"),
    ]


# A training program that follows SageMaker's contract for an image (`train`, /opt/ml
# at --ml-root here) and reports what it saw.
CONTRACT_PROGRAM = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    root = Path(sys.argv[3])
    model_dir = root / "model"
    seen = {
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "env": {
            k: v for k, v in os.environ.items() if k.startswith(("SM_", "SCONES_", "TRAINING_"))
        },
        "files": {
            name: sorted(os.listdir(root / "input" / "data" / name))
            for name in os.listdir(root / "input" / "data")
        },
        "config": {
            name: json.loads((root / "input" / "config" / name).read_text())
            for name in ("hyperparameters.json", "inputdataconfig.json", "resourceconfig.json")
        },
        "sibling": Path("helper.py").is_file(),
    }
    (model_dir / "seen.json").write_text(json.dumps(seen))
    (model_dir / "plots").mkdir()
    (model_dir / "plots" / "curve.txt").write_text("curve")
    (model_dir / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5}))
    (root / "output" / "data" / "extra.txt").write_text("extra")
    print("hello from the program", flush=True)
    """
)


def make_source(tmp_path: Path, script: str) -> Path:
    source = tmp_path / "code"
    source.mkdir()
    (source / "train.py").write_text(script)
    (source / "helper.py").write_text("VALUE = 1\n")
    return source


def make_job(source: Path, bucket: str, **overrides: Any) -> TrainingJob:
    settings: dict[str, Any] = {
        "entry_point": "train.py",
        "source_dir": source,
        "channels": channels(bucket),
        "output_path": f"s3://{bucket}/models/",
        "hyperparameters": {"epochs": 1, "batch-size": 4, "classes": "bicycle,motorcycle"},
        "environment": {"SCONES_GIT_COMMIT": "abc123"},
    }
    settings.update(overrides)
    return TrainingJob(**settings)


@pytest.fixture(scope="module")
def staged_bucket(local_aws: dict[str, str], shared_data: Path) -> str:
    bucket = "runner-sample"
    stage_sample(bucket, shared_data)
    return bucket


def test_program_sees_the_sagemaker_contract_and_artifacts_land_where_a_job_puts_them(
    staged_bucket: str, tmp_path: Path, unique_name: str
) -> None:
    """ "How Amazon SageMaker AI Runs Your Training Image": the image runs as `train`;
    "How Amazon SageMaker AI Provides Training Information": hyperparameters.json (string
    values), inputdataconfig.json, resourceconfig.json in input/config, each channel in
    input/data/<channel>/, TRAINING_JOB_NAME and the job's Environment as variables."""
    source = make_source(tmp_path, CONTRACT_PROGRAM)
    output = io.BytesIO()
    job_dir = tmp_path / "job"
    result = run_training_job(
        make_job(source, staged_bucket, name=unique_name), stream=output, work_dir=job_dir
    )

    assert b"hello from the program" in output.getvalue()
    base = f"models/{unique_name}/output/"
    assert keys_under(staged_bucket, f"models/{unique_name}/") == [
        base + "metrics.json",
        base + "model.tar.gz",
        base + "output.tar.gz",
    ]
    assert result.model_artifacts == f"s3://{staged_bucket}/{base}model.tar.gz"
    assert result.metrics == {"test_accuracy": 0.5}
    assert json.loads(read_object(staged_bucket, base + "metrics.json")) == result.metrics

    model = tar_members(read_object(staged_bucket, base + "model.tar.gz"))
    assert set(model) == {"seen.json", "plots", "plots/curve.txt", "metrics.json"}
    assert tar_members(read_object(staged_bucket, base + "output.tar.gz")) == {
        "extra.txt": b"extra"
    }

    seen = json.loads(model["seen.json"] or b"")
    env = seen["env"]
    assert seen["argv"] == ["train", "--ml-root", str(job_dir)]
    assert seen["sibling"] and seen["cwd"] == str(job_dir / "code")
    assert seen["files"]["train"] == sorted(
        key.rsplit("/", 1)[1] for key in keys_under(staged_bucket, "train/")
    )
    assert seen["files"]["train_lst"] == ["train.lst"]
    assert seen["files"]["test_lst"] == ["test.lst"]
    assert set(seen["files"]) == {"test", "test_lst", "train", "train_lst"}
    # No script-mode toolkit variables: the program reads the job directory. The runner's
    # own environment passes through (CI's SCONES_CIFAR_SOURCE, say), and the job's
    # Environment and name are added on top, nothing else.
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name.startswith(("SM_", "SCONES_", "TRAINING_"))
    }
    assert env == {**inherited, "SCONES_GIT_COMMIT": "abc123", "TRAINING_JOB_NAME": unique_name}
    # As the API stores them: every value JSON-encoded as a string.
    assert seen["config"]["hyperparameters.json"] == {
        "epochs": "1",
        "batch-size": "4",
        "classes": '"bicycle,motorcycle"',
    }
    assert seen["config"]["inputdataconfig.json"]["train"]["TrainingInputMode"] == "File"
    assert seen["config"]["resourceconfig.json"]["current_host"] == "algo-1"


def test_dependencies_are_copied_beside_the_entry_point(
    staged_bucket: str, tmp_path: Path, unique_name: str
) -> None:
    # As the SageMaker SDK packs an estimator's `dependencies`: each directory lands in
    # code/ under its own name, so the script imports it with no path of its own.
    library = tmp_path / "lib" / "shared_package"
    library.mkdir(parents=True)
    (library / "__init__.py").write_text("GREETING = 'from the dependency'\n")
    script = textwrap.dedent(
        """
        import os, sys, shared_package
        path = os.path.join(sys.argv[3], "model", "greeting.txt")
        open(path, "w").write(shared_package.GREETING)
        """
    )
    job = make_job(
        make_source(tmp_path, script), staged_bucket, name=unique_name, dependencies=[library]
    )
    run_training_job(job, stream=io.BytesIO(), work_dir=tmp_path / "job")
    assert (tmp_path / "job/code/shared_package/__init__.py").is_file()
    model = tar_members(read_object(staged_bucket, f"models/{unique_name}/output/model.tar.gz"))
    assert model["greeting.txt"] == b"from the dependency"


def test_channel_under_a_prefix_downloads_relative_to_its_folder(
    local_aws: dict[str, str], shared_data: Path, tmp_path: Path, unique_name: str
) -> None:
    stage_sample(unique_name, shared_data, prefix="runs/one/", train=1, test=1)
    source = make_source(tmp_path, CONTRACT_PROGRAM)
    job = make_job(
        source, unique_name, name="prefixed", channels=channels(unique_name, "runs/one/")
    )
    run_training_job(job, stream=io.BytesIO(), work_dir=tmp_path / "job")
    assert sorted(os.listdir(tmp_path / "job/input/data/train_lst")) == ["train.lst"]
    assert len(os.listdir(tmp_path / "job/input/data/train")) == 2


def test_failing_script_uploads_nothing_and_reports_its_exit_code_and_output(
    staged_bucket: str, tmp_path: Path, unique_name: str
) -> None:
    script = "import sys\nprint('about to fail')\nsys.exit('boom: the data is bad')\n"
    job = make_job(make_source(tmp_path, script), staged_bucket, name=unique_name)
    with pytest.raises(TrainingJobFailed) as failed:
        run_training_job(job, stream=io.BytesIO(), work_dir=tmp_path / "job")
    assert failed.value.exit_code == 1
    assert "boom: the data is bad" in failed.value.failure
    assert "ExitCode 1" in failed.value.failure
    assert (tmp_path / "job/output/failure").read_text() == failed.value.failure
    assert keys_under(staged_bucket, f"models/{unique_name}/") == []


def test_failure_file_written_by_the_script_is_the_reported_reason(
    staged_bucket: str, tmp_path: Path, unique_name: str
) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        open(os.path.join(sys.argv[3], "output", "failure"), "w").write("no GPU")
        sys.exit(7)
        """
    )
    job = make_job(make_source(tmp_path, script), staged_bucket, name=unique_name)
    with pytest.raises(TrainingJobFailed) as failed:
        run_training_job(job, stream=io.BytesIO())
    assert (failed.value.exit_code, failed.value.failure) == (7, "no GPU")
    assert keys_under(staged_bucket, f"models/{unique_name}/") == []


def test_empty_channel_is_an_error_before_the_script_runs(
    staged_bucket: str, tmp_path: Path, unique_name: str
) -> None:
    marker = tmp_path / "ran"
    script = f"open({str(marker)!r}, 'w').close()\n"
    missing = [*channels(staged_bucket)[:3], Channel("test_lst", f"s3://{staged_bucket}/no.lst")]
    job = make_job(make_source(tmp_path, script), staged_bucket, name=unique_name, channels=missing)
    with pytest.raises(TrainingJobError, match=r"no S3 objects found under .*no\.lst"):
        run_training_job(job, stream=io.BytesIO())
    assert not marker.exists()
    assert keys_under(staged_bucket, f"models/{unique_name}/") == []


def test_key_that_would_leave_the_channel_directory_is_refused(
    local_aws: dict[str, str], tmp_path: Path, unique_name: str
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    s3.put_object(Bucket=unique_name, Key="train/ok.png", Body=b"x")
    s3.put_object(Bucket=unique_name, Key="train/a//b.png", Body=b"x")
    job = make_job(
        make_source(tmp_path, "pass\n"),
        unique_name,
        name="hostile",
        channels=[Channel("train", f"s3://{unique_name}/train/")],
    )
    with pytest.raises(TrainingJobError, match="not a plain path"):
        run_training_job(job, stream=io.BytesIO())
    assert keys_under(unique_name, "models/") == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"name": "bad_name!"}, "invalid job name"),
        ({"name": "x" * 64}, "invalid job name"),
        ({"name": ""}, "invalid job name"),
        ({"entry_point": "missing.py"}, "does not exist"),
        ({"channels": [Channel("../up", "s3://b/x")]}, "invalid channel name"),
        ({"output_path": "/tmp/out"}, "not an s3:// URI"),
        ({"dependencies": [Path("/no/such/dir")]}, "is not a directory"),
        # CreateTrainingJob's HyperParameters: at most 100, keys of at most 256 characters,
        # values of at most 2500 (API reference; a longer one is a ValidationException).
        ({"hyperparameters": {f"h{i}": 1 for i in range(101)}}, "at most 100"),
        ({"hyperparameters": {"k" * 257: 1}}, "longer than 256"),
        ({"hyperparameters": {"classes": "c" * 2499}}, "2501 characters as sent"),
    ],
)
def test_malformed_job_is_refused_before_anything_happens(
    staged_bucket: str, tmp_path: Path, override: dict[str, Any], message: str
) -> None:
    settings = {"name": "valid-name", **override}
    job = make_job(make_source(tmp_path, "pass\n"), staged_bucket, **settings)
    with pytest.raises(TrainingJobError, match=message):
        run_training_job(job, stream=io.BytesIO())


def test_job_name_whose_output_exists_is_refused(
    staged_bucket: str, tmp_path: Path, unique_name: str
) -> None:
    key = f"models/{unique_name}/output/model.tar.gz"
    boto3.client("s3").put_object(Bucket=staged_bucket, Key=key, Body=b"earlier")
    job = make_job(make_source(tmp_path, CONTRACT_PROGRAM), staged_bucket, name=unique_name)
    with pytest.raises(TrainingJobError, match="already exists"):
        run_training_job(job, stream=io.BytesIO())
    assert read_object(staged_bucket, key) == b"earlier"


def test_interrupt_kills_the_script_and_leaves_no_upload_or_job_directory(
    staged_bucket: str, tmp_path: Path, unique_name: str
) -> None:
    report = tmp_path / "script.json"
    script = textwrap.dedent(
        f"""
        import json, os, time
        from pathlib import Path
        Path({str(report)!r}).write_text(json.dumps({{"pid": os.getpid(), "cwd": os.getcwd()}}))
        time.sleep(120)
        """
    )
    source = make_source(tmp_path, script)
    driver = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from local_aws.training import Channel, TrainingJob, run_training_job
        job = TrainingJob(
            name={unique_name!r}, entry_point="train.py", source_dir=Path({str(source)!r}),
            channels=[Channel("train", "s3://{staged_bucket}/train/")],
            output_path="s3://{staged_bucket}/models/",
        )
        try:
            run_training_job(job)
        except KeyboardInterrupt:
            sys.exit(130)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", driver], cwd=REPO_ROOT, preexec_fn=interruptible
    )
    try:
        deadline = time.monotonic() + 60
        while not report.exists() or not report.read_text():
            assert time.monotonic() < deadline, "the script never started"
            assert process.poll() is None, "the runner exited early"
            time.sleep(0.1)
        script_pid = json.loads(report.read_text())["pid"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
    finally:
        if process.poll() is None:
            process.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(script_pid, 0)
    assert not Path(json.loads(report.read_text())["cwd"]).exists()
    assert keys_under(staged_bucket, f"models/{unique_name}/") == []


def test_upload_that_fails_midway_removes_what_it_had_uploaded(
    staged_bucket: str, tmp_path: Path, unique_name: str
) -> None:
    first = tmp_path / "model.tar.gz"
    first.write_bytes(b"model")
    uploads = [(first, f"{unique_name}/model.tar.gz"), (tmp_path / "gone", f"{unique_name}/m")]
    with pytest.raises(FileNotFoundError):
        upload_all_or_nothing(boto3.client("s3"), staged_bucket, uploads)
    assert keys_under(staged_bucket, f"{unique_name}/") == []
