"""`train --mode sagemaker`: the job as a SageMaker training job, through the SageMaker
SDK (imported only here, as it is slow): the project's image by digest for --algorithm
pytorch, the built-in image-classification algorithm for builtin; its logs streamed while
it runs, and its metrics read out of its model.tar.gz and copied beside it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tarfile
import tempfile
from typing import IO, Any

import boto3
from botocore.exceptions import ClientError

from contract.s3 import S3UriError, parse_s3_object_uri
from training_job import log_retention, model_code
from training_job.data.manifests import MANIFEST_NAME
from training_job.training.job import METRICS_FILE, LaunchError, Plan
from training_job.training.report import format_metrics

DEFAULT_INSTANCE_TYPES = {"pytorch": "ml.m5.xlarge", "builtin": "ml.p3.2xlarge"}
# MaxRuntime: a few times what the job takes here (the pytorch script's default epochs run
# in minutes on ml.m5.xlarge, the built-in algorithm's in minutes on a GPU), so a job that
# hangs is stopped in an hour rather than billed for SageMaker's default of a day.
DEFAULT_MAX_RUNTIME_MINUTES = 60
# Given to the SDK instead of its config files, so what runs is what this file says.
SDK_CONFIG = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}
MAX_METRICS_BYTES = 16 << 20


def train_on_sagemaker(
    plan: Plan, args: argparse.Namespace, training_image: str | None
) -> tuple[int, str | None]:
    """Run the job on SageMaker: its exit status and, when it completed while we waited and
    --register asks for it, the model.tar.gz to register (launch.py registers it)."""
    instance_type = args.instance_type or DEFAULT_INSTANCE_TYPES[plan.algorithm]
    estimator, inputs = build_estimator(
        plan,
        role=args.role,
        instance_type=instance_type,
        training_image=training_image,
        max_runtime_seconds=args.max_runtime * 60,
        debugger=args.debugger,
    )
    # SageMaker creates the group with no retention: logs kept forever, billed per GB.
    log_retention.keep(
        boto3.client("logs"), log_retention.TRAINING_LOG_GROUP, args.log_retention_days
    )
    print(f"training job {plan.job_name} ({plan.algorithm} on {instance_type})")
    estimator.fit(inputs=inputs, job_name=plan.job_name, wait=args.wait, logs="All")
    if not args.wait:
        print(
            f"created; follow it with `aws sagemaker describe-training-job "
            f"--training-job-name {plan.job_name}`; once it completes, register its model "
            f"with `python -m training_job models register --model-data {plan.model_data()} "
            f"--manifest {plan.uri(MANIFEST_NAME)} --algorithm {plan.algorithm}`"
        )
        return 0, None
    print()  # the SDK's status line ends without one
    code = report_sagemaker_job(plan)
    if code == 0 and args.register:
        job = boto3.client("sagemaker").describe_training_job(TrainingJobName=plan.job_name)
        return code, str(job["ModelArtifacts"]["S3ModelArtifacts"])
    return code, None


def build_estimator(
    plan: Plan,
    role: str,
    instance_type: str,
    training_image: str | None = None,
    max_runtime_seconds: int = DEFAULT_MAX_RUNTIME_MINUTES * 60,
    debugger: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """The SDK estimator and its inputs; sagemaker is imported here only, as it is slow.
    `training_image` (the project's image by digest) is what --algorithm pytorch runs."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    import sagemaker
    from sagemaker.inputs import TrainingInput

    # The SDK switches INFO logging on; botocore's notes on endpoint lookup are noise.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    # SDK_CONFIG opts out of the SDK's telemetry, a call to an AWS-owned bucket on every
    # fit(): our jobs' metadata is not for a third party (and local mode has no route out).
    session = sagemaker.Session(
        boto_session=boto3.Session(),
        default_bucket=plan.bucket,
        sagemaker_config=SDK_CONFIG,
    )
    common: dict[str, Any] = {
        "role": role,
        "instance_count": 1,
        "instance_type": instance_type,
        "output_path": plan.output_path,
        "sagemaker_session": session,
        "max_run": max_runtime_seconds,
    }
    if not debugger:
        common.update(disable_profiler=True, debugger_hook_config=False)
    if plan.algorithm == "pytorch":
        if training_image is None:
            raise LaunchError("--algorithm pytorch trains in the project's image: none given")
        # A bring-your-own image: SageMaker runs it as `train` with the code it holds
        # (container.py). The generic Estimator passes values through str(), so they are
        # JSON-encoded here as a framework estimator's are, and as local mode writes them.
        encoded = model_code.container().encode_hyperparameters(plan.hyperparameters)
        # The code that runs is the image's: its own SCONES_GIT_COMMIT (`image build`
        # records it) is the job's provenance, not this checkout's.
        environment: dict[str, Any] = {
            name: value for name, value in plan.environment().items() if name != "SCONES_GIT_COMMIT"
        }
        estimator = sagemaker.estimator.Estimator(
            image_uri=training_image,
            hyperparameters=encoded,
            environment=environment,
            **common,
        )
        return estimator, {name: TrainingInput(uri) for name, uri in plan.channels().items()}
    image = sagemaker.image_uris.retrieve("image-classification", session.boto_region_name)
    estimator = sagemaker.estimator.Estimator(
        image_uri=image, hyperparameters=plan.hyperparameters, **common
    )
    inputs = {
        name: TrainingInput(uri, content_type="application/x-image")
        for name, uri in plan.channels().items()
    }
    return estimator, inputs


def report_sagemaker_job(plan: Plan) -> int:
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName=plan.job_name)
    status = job["TrainingJobStatus"]
    if status != "Completed":
        print(
            f"error: training job {plan.job_name} is {status}: "
            f"{job.get('FailureReason', 'no reason given')}",
            file=sys.stderr,
        )
        return 1
    artifacts = job["ModelArtifacts"]["S3ModelArtifacts"]
    print(f"model: {artifacts}")
    if plan.algorithm == "builtin":
        # Its model.tar.gz holds MXNet parameters, not our metrics.json: report its own.
        for metric in job.get("FinalMetricDataList", []):
            print(f"  {metric['MetricName']:<28} {metric['Value']:.4f}")
        return 0
    metrics = copy_metrics_beside(artifacts)
    seconds = job.get("TrainingTimeInSeconds")
    print(format_metrics(metrics, job_seconds=float(seconds) if seconds is not None else None))
    return 0


def copy_metrics_beside(model_uri: str) -> dict[str, Any]:
    """Read metrics.json out of the job's model.tar.gz and put a copy beside it, as a
    local job does, so tools read the metrics without untarring the model."""
    try:
        bucket, key = parse_s3_object_uri(model_uri)
    except S3UriError as error:
        raise LaunchError(f"unexpected model artifact location: {error}") from None
    folder, _, name = key.rpartition("/")
    if name != "model.tar.gz":
        raise LaunchError(f"unexpected model artifact location {model_uri}")
    folder = f"{folder}/" if folder else ""
    s3 = boto3.client("s3")
    with tempfile.TemporaryFile() as archive:
        try:
            s3.download_fileobj(bucket, key, archive)
        except ClientError as error:
            raise LaunchError(f"cannot read {model_uri}: {error}") from error
        archive.seek(0)
        raw = metrics_from_archive(archive, model_uri)
    try:
        metrics = json.loads(raw)
    except ValueError as error:
        raise LaunchError(f"{METRICS_FILE} in {model_uri} is not JSON: {error}") from error
    if not isinstance(metrics, dict):
        raise LaunchError(f"{METRICS_FILE} in {model_uri} is not a JSON object")
    s3.put_object(Bucket=bucket, Key=f"{folder}{METRICS_FILE}", Body=raw)
    print(f"metrics: s3://{bucket}/{folder}{METRICS_FILE}")
    return metrics


def metrics_from_archive(archive: IO[bytes], where: str) -> bytes:
    try:
        with tarfile.open(fileobj=archive, mode="r:gz") as tar:
            for member in tar:
                if member.name.removeprefix("./") != METRICS_FILE or not member.isfile():
                    continue
                if member.size > MAX_METRICS_BYTES:
                    raise LaunchError(f"{METRICS_FILE} in {where} is {member.size} bytes")
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular file always extracts
                return extracted.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise LaunchError(f"{where} is not a readable .tar.gz: {error}") from error
    raise LaunchError(f"{where} has no {METRICS_FILE} at its root")
