"""The local SageMaker training runner: runs a training program the way SageMaker runs
a bring-your-own training image (`docker run IMAGE train`), with its data in S3 (the local
AWS, or AWS itself). The project's program is training_job/code/container.py, the entry
point of the image (Dockerfile) that SageMaker mode trains with.

What a SageMaker job does, and so what this does, in order:
  1. lay out a job directory like `/opt/ml`: `input/data/<channel>/` (downloaded from each
     channel's S3 prefix), `input/config/{hyperparameters,inputdataconfig,resourceconfig}.json`
     (hyperparameters JSON-encoded, as the launcher sends them), `model/`, `output/data/`,
     and `code/` (the program's directory, with each of the job's dependency directories
     copied into it, as the Dockerfile copies them into /opt/program);
  2. run `python code/<program> train --ml-root <job directory>` from `code/` with this
     process's environment, the job's Environment and TRAINING_JOB_NAME, streaming its
     output;
  3. on success, tar `model/` into `model.tar.gz` and `output/data/` into `output.tar.gz`
     (files at the archive root) and upload both to `<output path><job name>/output/`.
     The `metrics.json` the program wrote into `model/` is copied beside `model.tar.gz`,
     last, so a reader that sees it knows the artifacts are complete.
On failure the program's exit code and `output/failure` (or the tail of its output) are
reported and nothing is uploaded; an interrupt kills the program and removes any upload.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import boto3
from botocore.exceptions import ClientError
from tqdm import tqdm

from contract.aws_errors import error_code
from contract.s3 import S3UriError, parse_s3_prefix_uri, parse_s3_uri
from contract.sagemaker_names import NAME_PATTERN
from training_job import model_code
from training_job.errors import CommandError
from training_job.training.job import (
    DEPENDENCIES,
    METRICS_FILE,
    SOURCE_DIR,
    TRAINING_PROGRAM,
    Plan,
)
from training_job.training.report import format_metrics

CURRENT_HOST = "algo-1"
# SageMaker's own rules for channel names (for job names, contract.sagemaker_names').
CHANNEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9\.\-_]{1,64}$")
FAILURE_TAIL_BYTES = 4096
# CreateTrainingJob's HyperParameters (API reference): at most 100 entries, each key at
# most 256 characters and each value (as sent: JSON-encoded) at most 2500.
MAX_HYPERPARAMETERS = 100
MAX_HYPERPARAMETER_KEY = 256
MAX_HYPERPARAMETER_VALUE = 2500
DOWNLOAD_THREADS = 8


class TrainingJobError(Exception):
    """The job could not run: bad configuration or input data."""


class TrainingJobFailed(TrainingJobError):
    """The program exited non-zero; nothing was uploaded."""

    def __init__(self, job_name: str, exit_code: int, failure: str) -> None:
        super().__init__(f"training job {job_name} failed with exit code {exit_code}")
        self.exit_code = exit_code
        self.failure = failure


@dataclass(frozen=True)
class Channel:
    name: str
    s3_uri: str  # an S3 prefix, as in a job's S3DataSource (S3DataType=S3Prefix)
    content_type: str | None = None


@dataclass(frozen=True)
class TrainingJob:
    name: str
    entry_point: str  # the training program, a file inside source_dir: `train --ml-root DIR`
    source_dir: Path
    channels: list[Channel]
    output_path: str  # s3://bucket/prefix/; the job writes under <output_path><name>/output/
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    # Directories copied beside the entry point, as the SageMaker SDK's `dependencies`.
    dependencies: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class TrainingResult:
    model_artifacts: str  # s3:// URI of model.tar.gz
    output_artifacts: str  # s3:// URI of output.tar.gz
    metrics_uri: str | None  # s3:// URI of the metrics.json copy, when the program wrote one
    metrics: dict[str, Any] | None
    seconds: float


def artifact_keys(output_path: str, job_name: str) -> tuple[str, str, str, str]:
    """(bucket, model.tar.gz key, output.tar.gz key, metrics.json key), where SageMaker
    puts a job's output for this output path."""
    bucket, prefix = parse_s3_prefix_uri(output_path)
    base = f"{prefix}{job_name}/output/"
    return bucket, base + "model.tar.gz", base + "output.tar.gz", base + METRICS_FILE


def run_training_job(
    job: TrainingJob,
    *,
    work_dir: Path | None = None,
    stream: IO[bytes] | None = None,
) -> TrainingResult:
    """Run `job` here; return where its artifacts went. `work_dir` (an empty or new
    directory) keeps the job directory for inspection; by default it is temporary."""
    _validate(job)
    started = time.monotonic()
    s3 = boto3.client("s3")
    bucket, model_key, output_key, metrics_key = artifact_keys(job.output_path, job.name)
    if _exists(s3, bucket, model_key):
        raise TrainingJobError(
            f"s3://{bucket}/{model_key} already exists: training job names are unique, "
            "choose another job name"
        )
    with _job_root(work_dir) as root:
        paths = JobPaths(root)
        paths.create()
        shutil.copytree(
            job.source_dir,
            paths.code,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            dirs_exist_ok=True,
        )
        for dependency in job.dependencies:
            shutil.copytree(
                dependency,
                paths.code / dependency.name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                dirs_exist_ok=True,
            )
        download_channels(s3, job.channels, paths.data)
        write_config(paths, job, model_code.container().encode_hyperparameters(job.hyperparameters))
        command = [sys.executable, job.entry_point, "train", "--ml-root", str(root)]
        exit_code, tail = run_entry_point(command, paths.code, job_environment(job), stream)
        if exit_code != 0:
            failure = _failure_text(paths, exit_code, tail, command)
            paths.failure.write_text(failure)
            raise TrainingJobFailed(job.name, exit_code, failure)
        metrics_file = paths.model / METRICS_FILE
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        uploads = [
            (pack(paths.output_data, root / "output.tar.gz"), output_key),
            (pack(paths.model, root / "model.tar.gz"), model_key),
        ]
        if metrics is not None:
            uploads.append((metrics_file, metrics_key))
        upload_all_or_nothing(s3, bucket, uploads)
    return TrainingResult(
        model_artifacts=f"s3://{bucket}/{model_key}",
        output_artifacts=f"s3://{bucket}/{output_key}",
        metrics_uri=f"s3://{bucket}/{metrics_key}" if metrics is not None else None,
        metrics=metrics,
        seconds=time.monotonic() - started,
    )


def _validate(job: TrainingJob) -> None:
    if not NAME_PATTERN.fullmatch(job.name):
        raise TrainingJobError(
            f"invalid job name {job.name!r}: 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    if not (job.source_dir / job.entry_point).is_file():
        raise TrainingJobError(f"entry point {job.source_dir / job.entry_point} does not exist")
    for dependency in job.dependencies:
        if not dependency.is_dir():
            raise TrainingJobError(f"dependency {dependency} is not a directory")
    _validate_hyperparameters(model_code.container().encode_hyperparameters(job.hyperparameters))
    names = [channel.name for channel in job.channels]
    if len(set(names)) != len(names):
        raise TrainingJobError(f"channel names repeat: {names}")
    for channel in job.channels:
        if not CHANNEL_NAME_PATTERN.fullmatch(channel.name):
            raise TrainingJobError(f"invalid channel name {channel.name!r}")
    try:
        for channel in job.channels:
            parse_s3_uri(channel.s3_uri)  # a channel's S3Prefix is a key prefix, as written
        parse_s3_prefix_uri(job.output_path)
    except S3UriError as error:
        raise TrainingJobError(str(error)) from None


def _validate_hyperparameters(encoded: dict[str, str]) -> None:
    """CreateTrainingJob's limits, which the API answers with a ValidationException."""
    if len(encoded) > MAX_HYPERPARAMETERS:
        raise TrainingJobError(
            f"{len(encoded)} hyperparameters: a training job takes at most {MAX_HYPERPARAMETERS}"
        )
    for name, value in encoded.items():
        if len(name) > MAX_HYPERPARAMETER_KEY:
            raise TrainingJobError(
                f"hyperparameter name {name[:40]!r}... is longer than {MAX_HYPERPARAMETER_KEY}"
            )
        if len(value) > MAX_HYPERPARAMETER_VALUE:
            raise TrainingJobError(
                f"hyperparameter {name!r} is {len(value)} characters as sent (JSON-encoded): "
                f"a training job takes at most {MAX_HYPERPARAMETER_VALUE}"
            )


def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error_code(error) in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    return True


@contextmanager
def _job_root(work_dir: Path | None) -> Iterator[Path]:
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="scones-training-") as tmp:
            yield Path(tmp)
        return
    if work_dir.exists() and any(work_dir.iterdir()):
        raise TrainingJobError(f"work directory {work_dir} is not empty")
    work_dir.mkdir(parents=True, exist_ok=True)
    yield work_dir


class JobPaths:
    """The `/opt/ml` layout, rooted at `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.code = root / "code"
        self.input = root / "input"
        self.data = self.input / "data"
        self.config = self.input / "config"
        self.model = root / "model"
        self.output = root / "output"
        self.output_data = self.output / "data"
        self.output_intermediate = self.output / "intermediate"
        self.failure = self.output / "failure"

    def create(self) -> None:
        for path in (
            self.code,
            self.data,
            self.config,
            self.model,
            self.output_data,
            self.output_intermediate,
        ):
            path.mkdir(parents=True, exist_ok=True)


def download_channels(s3: Any, channels: list[Channel], data_dir: Path) -> None:
    """Download each channel's S3 prefix into `data_dir/<channel>/`, as File mode does:
    a key's path below the prefix's folder is its path in the channel directory
    (`s3://b/train/x.png` -> `train/x.png`, `s3://b/train.lst` -> `train_lst/train.lst`)."""
    planned: list[tuple[str, str, Path, int]] = []
    for channel in channels:
        bucket, prefix = parse_s3_uri(channel.s3_uri)
        folder = prefix[: prefix.rfind("/") + 1]
        channel_dir = (data_dir / channel.name).resolve()
        channel_dir.mkdir(parents=True, exist_ok=True)
        found = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):  # a console "folder" marker, not data
                    continue
                target = _channel_target(channel_dir, key[len(folder) :], channel.s3_uri)
                planned.append((bucket, key, target, int(item["Size"])))
                found += 1
        if found == 0:
            raise TrainingJobError(
                f"no S3 objects found under {channel.s3_uri} (channel {channel.name})"
            )
    progress = tqdm(
        total=sum(size for *_, size in planned),
        unit="B",
        unit_scale=True,
        desc=f"downloading {len(planned)} files",
        file=sys.stderr,
    )

    def fetch(plan: tuple[str, str, Path, int]) -> None:
        bucket, key, target, size = plan
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
        progress.update(size)

    with progress, ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        list(pool.map(fetch, planned))


def _channel_target(channel_dir: Path, relative: str, uri: str) -> Path:
    parts = relative.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise TrainingJobError(f"refusing S3 key {relative!r} under {uri}: not a plain path")
    target = channel_dir.joinpath(*parts).resolve()
    if not target.is_relative_to(channel_dir):
        raise TrainingJobError(f"refusing S3 key {relative!r} under {uri}: leaves the channel")
    return target


def _resource_config() -> dict[str, Any]:
    return {
        "current_host": CURRENT_HOST,
        "hosts": [CURRENT_HOST],
        "network_interface_name": "eth0",
        "current_instance_type": "local",
        "current_group_name": "homogeneousCluster",
        "instance_groups": [
            {
                "instance_group_name": "homogeneousCluster",
                "instance_type": "local",
                "hosts": [CURRENT_HOST],
            }
        ],
    }


def _input_data_config(channels: list[Channel]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for channel in channels:
        entry = {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
        if channel.content_type:
            entry["ContentType"] = channel.content_type
        config[channel.name] = entry
    return config


def write_config(paths: JobPaths, job: TrainingJob, hyperparameters: dict[str, str]) -> None:
    for name, content in (
        ("hyperparameters.json", hyperparameters),
        ("inputdataconfig.json", _input_data_config(job.channels)),
        ("resourceconfig.json", _resource_config()),
    ):
        (paths.config / name).write_text(json.dumps(content, indent=2))


def job_environment(job: TrainingJob) -> dict[str, str]:
    """This process's environment plus what SageMaker sets in a training container: the
    job's name and the Environment of its CreateTrainingJob request."""
    environment = dict(os.environ)
    environment["TRAINING_JOB_NAME"] = job.name
    environment["PYTHONUNBUFFERED"] = "1"  # so the output streams as the program writes it
    environment.update(job.environment)
    return environment


def run_entry_point(
    command: list[str], cwd: Path, environment: dict[str, str], stream: IO[bytes] | None
) -> tuple[int, bytes]:
    """Run the program, copying its output to `stream` as it comes (progress bars included);
    return its exit code (128+N for signal N, as a shell reports it) and the output's tail.
    An interrupt (Ctrl-C, SIGTERM) kills the program's whole process group, then re-raises."""
    if stream is None:
        sys.stdout.flush()  # what we printed comes before the program's bytes
    sink = stream if stream is not None else sys.stdout.buffer
    tail = bytearray()
    # Its own session, so our interrupt handling decides when the program (and any
    # data-loader workers it forked) goes, and nothing outlives us.
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    try:
        with _sigterm_as_interrupt():
            while chunk := os.read(process.stdout.fileno(), 65536):
                sink.write(chunk)
                sink.flush()
                tail += chunk
                del tail[:-FAILURE_TAIL_BYTES]
            code = process.wait()
    except BaseException:
        _kill_group(process)
        raise
    finally:
        process.stdout.close()
    return (128 - code if code < 0 else code), bytes(tail)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while the program runs, so it is killed, not orphaned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _failure_text(paths: JobPaths, exit_code: int, tail: bytes, command: list[str]) -> str:
    if paths.failure.is_file() and paths.failure.stat().st_size > 0:
        return paths.failure.read_text(errors="replace")[-FAILURE_TAIL_BYTES:]
    message = tail.decode(errors="replace").strip()
    return (
        f"AlgorithmError: ExecuteUserScriptError:\nExitCode {exit_code}\n"
        f'ErrorMessage "{message}"\nCommand "{" ".join(command)}"'
    )


def pack(directory: Path, archive: Path) -> Path:
    """Tar.gz `directory`'s contents with its files at the archive root, as SageMaker does."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def upload_all_or_nothing(s3: Any, bucket: str, uploads: list[tuple[Path, str]]) -> None:
    """Upload in order (the last one marks completion); on any error or interrupt, delete
    what was uploaded, so a reader never sees part of a job's output."""
    done: list[str] = []
    try:
        for path, key in tqdm(uploads, desc="uploading artifacts", unit="file", file=sys.stderr):
            s3.upload_file(str(path), bucket, key)
            done.append(key)
    except BaseException:
        for key in reversed(done):
            s3.delete_object(Bucket=bucket, Key=key)
        raise


# --- `python -m training_job train --mode local` (training_job/local_mode.py) -----------


def run(plan: Plan, work_dir: Path | None) -> int:
    """Run the launcher's planned job here as SageMaker would, and print its metrics."""
    job = TrainingJob(
        name=plan.job_name,
        entry_point=TRAINING_PROGRAM,
        source_dir=SOURCE_DIR,
        dependencies=list(DEPENDENCIES),
        channels=[Channel(name, uri) for name, uri in plan.channels().items()],
        output_path=plan.output_path,
        hyperparameters=plan.hyperparameters,
        environment=plan.environment(),
    )
    print(f"training job {plan.job_name} (local mode), hyperparameters {plan.hyperparameters}")
    try:
        result = run_training_job(job, work_dir=work_dir)
    except TrainingJobFailed as failed:
        print(failed.failure, file=sys.stderr)  # the program's own reason, as it wrote it
        raise CommandError(str(failed), exit_code=failed.exit_code) from failed
    except TrainingJobError as error:
        raise CommandError(str(error)) from error
    print(f"model: {result.model_artifacts}")
    print(f"output: {result.output_artifacts}")
    if result.metrics is None:
        raise CommandError(f"the job wrote no {METRICS_FILE} into its model directory")
    print(f"metrics: {result.metrics_uri}")
    print(format_metrics(result.metrics, job_seconds=result.seconds))
    return 0
