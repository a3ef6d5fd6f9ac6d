"""`python -m training_job deploy`: the classifier behind an endpoint, on SageMaker or here.

`--mode sagemaker` creates the model (PyTorch inference image, the training job's
model.tar.gz), an endpoint configuration with data capture to s3://BUCKET/data_capture,
the endpoint, and target-tracking autoscaling on invocations per instance; `--delete`
removes all of it. `--mode local` serves the same model.tar.gz with the same inference
script on 127.0.0.1 (local_aws/endpoint), in the background until `--stop`. Both publish
the endpoint's name as an SSM parameter, which serverless.yml reads for the handlers.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from botocore.exceptions import ClientError

from local_aws.endpoint import config as endpoint_config
from training_job import capture

DEFAULT_PARAMETER_NAME = "/scones-unlimited/endpoint-name"
MODELS_PREFIX = "models/"
MODEL_ARCHIVE = "model.tar.gz"
VARIANT = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
STATE_DIR = Path(".local") / "endpoints"
# The newest PyTorch inference image the SageMaker SDK pinned here knows (CPU, py312).
FRAMEWORK_VERSION = "2.6.0"
PY_VERSION = "py312"
MAX_ARCHIVE_MEMBERS = 10_000
MAX_EXTRACTED_BYTES = 2 * 1024**3
LOCAL_READY_TIMEOUT_SECONDS = 300.0
LOCAL_STOP_TIMEOUT_SECONDS = 90.0
ENDPOINT_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
S3_URI_PATTERN = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/(.+)$")


class DeployError(Exception):
    """A deployment that cannot go on, with a message for the user."""


class UnsafeArchiveError(DeployError):
    """A model.tar.gz that would write outside its folder, link, or is far too large."""


def _endpoint_name(text: str) -> str:
    if not ENDPOINT_NAME_PATTERN.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a SageMaker endpoint name (letters, digits and hyphens, 1-63)"
        )
    return text


def _s3_uri(text: str) -> str:
    if not S3_URI_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an s3://BUCKET/KEY URI")
    return text


def _split_s3_uri(uri: str) -> tuple[str, str]:
    match = S3_URI_PATTERN.match(uri)
    if match is None:
        raise DeployError(f"{uri!r} is not an s3://BUCKET/KEY URI")
    return match.group(1), match.group(2)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="deploy the classifier to an endpoint (SageMaker, or local)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--mode",
        choices=("sagemaker", "local"),
        required=True,
        help="sagemaker: a real SageMaker endpoint; local: the same model and inference "
        "script served on this machine",
    )
    parser.add_argument(
        "--bucket",
        help="the project bucket (needed to deploy, not to --delete or --stop): the model is "
        "the newest model.tar.gz under s3://BUCKET/models/ and capture goes to "
        "s3://BUCKET/data_capture/",
    )
    parser.add_argument(
        "--model-data",
        type=_s3_uri,
        default=None,
        help="an s3:// URI of a model.tar.gz to deploy instead of the newest one",
    )
    parser.add_argument(
        "--endpoint-name",
        type=_endpoint_name,
        default=endpoint_config.DEFAULT_ENDPOINT_NAME,
        help="the endpoint's name (default: %(default)s)",
    )
    parser.add_argument(
        "--parameter-name",
        default=DEFAULT_PARAMETER_NAME,
        help="SSM parameter that receives the endpoint's name (default: %(default)s)",
    )
    sagemaker = parser.add_argument_group("--mode sagemaker")
    sagemaker.add_argument(
        "--role", help="IAM role ARN SageMaker assumes to read the model (required to create)"
    )
    sagemaker.add_argument(
        "--instance-type", default="ml.m5.xlarge", help="instance type (default: %(default)s)"
    )
    sagemaker.add_argument(
        "--min-instances", type=_positive_int, default=1, help="autoscaling minimum (default: 1)"
    )
    sagemaker.add_argument(
        "--max-instances", type=_positive_int, default=4, help="autoscaling maximum (default: 4)"
    )
    sagemaker.add_argument(
        "--target-invocations",
        type=float,
        default=70.0,
        help="target invocations per instance per minute for autoscaling (default: %(default)s)",
    )
    sagemaker.add_argument(
        "--framework-version",
        default=FRAMEWORK_VERSION,
        help="PyTorch inference image version (default: %(default)s)",
    )
    sagemaker.add_argument(
        "--py-version", default=PY_VERSION, help="its Python version (default: %(default)s)"
    )
    sagemaker.add_argument(
        "--delete",
        action="store_true",
        help="tear down the scaling policy, scalable target, endpoint, endpoint "
        "configuration, model and parameter instead of deploying",
    )
    local = parser.add_argument_group("--mode local")
    endpoint_config.add_arguments(local)
    local.add_argument(
        "--foreground",
        action="store_true",
        help="serve in this process until Ctrl-C instead of in the background",
    )
    local.add_argument(
        "--stop",
        action="store_true",
        help="stop the background endpoint of this --endpoint-name (a clean SIGTERM: "
        "every captured request is written first)",
    )
    local.add_argument(
        "--state-dir",
        type=Path,
        default=STATE_DIR,
        help="where the pid, lock and log files, the extracted model and the capture spool "
        "go (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if not (args.delete or args.stop or args.bucket):
            raise DeployError("--bucket is required to deploy")
        if args.mode == "sagemaker":
            if args.delete:
                return delete_sagemaker(args)
            return deploy_sagemaker(args)
        if args.stop:
            return stop_local(args.state_dir, args.endpoint_name, args.parameter_name)
        return deploy_local(args)
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ClientError as error:
        print(f"error: AWS refused a request: {error}", file=sys.stderr)
        return 1


# --- the model artifact -------------------------------------------------------------


def newest_model_data(s3: Any, bucket: str) -> str:
    """The s3:// URI of the most recently written model.tar.gz under models/."""
    newest: dict[str, Any] | None = None
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=MODELS_PREFIX):
        for item in page.get("Contents", []):
            if not item["Key"].endswith(MODEL_ARCHIVE):
                continue
            if newest is None or (item["LastModified"], item["Key"]) > (
                newest["LastModified"],
                newest["Key"],
            ):
                newest = item
    if newest is None:
        raise DeployError(
            f"no {MODEL_ARCHIVE} under s3://{bucket}/{MODELS_PREFIX}: train a model first "
            "(python -m training_job train) or pass --model-data"
        )
    return f"s3://{bucket}/{newest['Key']}"


def _check_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise UnsafeArchiveError(f"the archive holds {len(members)} entries, too many")
    total = 0
    for member in members:
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts:
            raise UnsafeArchiveError(f"entry {member.name!r} would be written outside the model")
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(f"entry {member.name!r} is a link or special file")
        total += member.size
        if total > MAX_EXTRACTED_BYTES:
            raise UnsafeArchiveError(f"the archive unpacks to over {MAX_EXTRACTED_BYTES} bytes")
    return members


def extract_model(archive: Path, destination: Path) -> Path:
    """Unpack model.tar.gz into `destination` (replaced whole, never left half-written),
    refusing paths outside it, links, special files and archives that unpack too large."""
    partial = destination.with_name(destination.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _check_members(tar)
            tar.extractall(partial, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise DeployError(f"{archive} is not a readable model.tar.gz: {error}") from error
    except UnsafeArchiveError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    missing = [name for name in ("model.pth", "model.json") if not (partial / name).is_file()]
    if missing:
        shutil.rmtree(partial, ignore_errors=True)
        raise DeployError(f"{archive} has no {' or '.join(missing)}: not a model artifact")
    shutil.rmtree(destination, ignore_errors=True)
    partial.rename(destination)
    return destination


# --- the SSM parameter --------------------------------------------------------------


def publish_parameter(name: str, endpoint_name: str) -> None:
    boto3.client("ssm").put_parameter(
        Name=name,
        Value=endpoint_name,
        Type="String",
        Overwrite=True,
        Description="The classifier endpoint the workflow's handlers invoke",
    )
    print(f"published {endpoint_name} as SSM parameter {name}")


def delete_parameter(name: str, endpoint_name: str) -> None:
    """Remove the parameter only while it still names this endpoint: after a blue/green
    rollout it names the new one, which the workflow must keep using."""
    ssm = boto3.client("ssm")
    try:
        current = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        if current != endpoint_name:
            print(f"kept SSM parameter {name}: it names {current}, not {endpoint_name}")
            return
        ssm.delete_parameter(Name=name)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ParameterNotFound":
            raise


# --- --mode sagemaker ---------------------------------------------------------------


def _resource_id(endpoint_name: str) -> str:
    return f"endpoint/{endpoint_name}/variant/{VARIANT}"


def _policy_name(endpoint_name: str) -> str:
    return f"{endpoint_name}-invocations-per-instance"


def _endpoint_exists(sagemaker: Any, endpoint_name: str) -> bool:
    try:
        sagemaker.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("ValidationException", "ValidationError"):
            return False
        raise
    return True


def deploy_sagemaker(args: argparse.Namespace) -> int:
    if not args.role:
        raise DeployError("--mode sagemaker needs --role (the SageMaker execution role ARN)")
    if args.min_instances > args.max_instances:
        raise DeployError("--min-instances is above --max-instances")
    import sagemaker.image_uris  # heavy: only this mode needs it

    session = boto3.session.Session()
    region = session.region_name or "us-east-1"
    s3 = session.client("s3")
    sm = session.client("sagemaker")
    autoscaling = session.client("application-autoscaling")
    name = args.endpoint_name
    if _endpoint_exists(sm, name):
        raise DeployError(
            f"endpoint {name} exists: delete it first (--delete) or choose another --endpoint-name"
        )
    model_data = args.model_data or newest_model_data(s3, args.bucket)
    image = sagemaker.image_uris.retrieve(
        "pytorch",
        region,
        version=args.framework_version,
        py_version=args.py_version,
        instance_type=args.instance_type,
        image_scope="inference",
    )
    # Model and configuration names carry a timestamp, as the SDK's do, so a new
    # deployment never collides with what an old one left.
    resource_name = f"{name[:47]}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    sm.create_model(
        ModelName=resource_name,
        ExecutionRoleArn=args.role,
        PrimaryContainer={
            "Image": image,
            "ModelDataUrl": model_data,
            "Environment": {
                # The PyTorch container runs code/inference.py from inside model.tar.gz.
                "SAGEMAKER_PROGRAM": "inference.py",
                "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                "SAGEMAKER_REGION": region,
            },
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName=resource_name,
        ProductionVariants=[
            {
                "VariantName": VARIANT,
                "ModelName": resource_name,
                "InitialInstanceCount": args.min_instances,
                "InstanceType": args.instance_type,
                "InitialVariantWeight": 1.0,
            }
        ],
        DataCaptureConfig={
            "EnableCapture": True,
            "InitialSamplingPercentage": int(args.capture_sampling),
            "DestinationS3Uri": capture.destination_uri(args.bucket),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": list(capture.JSON_CONTENT_TYPES)},
        },
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=resource_name)
    print(f"creating endpoint {name} from {model_data} ({image}); waiting for InService")
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName=name, WaiterConfig={"Delay": 30, "MaxAttempts": 120}
    )
    autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=_resource_id(name),
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=args.min_instances,
        MaxCapacity=args.max_instances,
    )
    autoscaling.put_scaling_policy(
        PolicyName=_policy_name(name),
        ServiceNamespace="sagemaker",
        ResourceId=_resource_id(name),
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": args.target_invocations,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            "ScaleOutCooldown": 60,
            "ScaleInCooldown": 300,
        },
    )
    publish_parameter(args.parameter_name, name)
    print(
        f"endpoint {name} is InService: {args.min_instances}-{args.max_instances} x "
        f"{args.instance_type}, capture {args.capture_sampling:g}% to "
        f"{capture.destination_uri(args.bucket)}"
    )
    return 0


def _ignore_missing(call: Any, **kwargs: Any) -> None:
    try:
        call(**kwargs)
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code not in ("ObjectNotFoundException", "ValidationException", "ValidationError"):
            raise


def delete_sagemaker(args: argparse.Namespace) -> int:
    """Remove what deploy_sagemaker created, in the reverse order; missing parts are fine."""
    session = boto3.session.Session()
    sm = session.client("sagemaker")
    autoscaling = session.client("application-autoscaling")
    name = args.endpoint_name
    _ignore_missing(
        autoscaling.delete_scaling_policy,
        PolicyName=_policy_name(name),
        ServiceNamespace="sagemaker",
        ResourceId=_resource_id(name),
        ScalableDimension=SCALABLE_DIMENSION,
    )
    _ignore_missing(
        autoscaling.deregister_scalable_target,
        ServiceNamespace="sagemaker",
        ResourceId=_resource_id(name),
        ScalableDimension=SCALABLE_DIMENSION,
    )
    config_names: list[str] = []
    if _endpoint_exists(sm, name):
        config_names.append(sm.describe_endpoint(EndpointName=name)["EndpointConfigName"])
        sm.delete_endpoint(EndpointName=name)
        sm.get_waiter("endpoint_deleted").wait(
            EndpointName=name, WaiterConfig={"Delay": 15, "MaxAttempts": 80}
        )
    for config_name in config_names:
        described = sm.describe_endpoint_config(EndpointConfigName=config_name)
        sm.delete_endpoint_config(EndpointConfigName=config_name)
        for variant in described["ProductionVariants"]:
            _ignore_missing(sm.delete_model, ModelName=variant["ModelName"])
    delete_parameter(args.parameter_name, name)
    print(f"deleted endpoint {name}, its configuration, model, autoscaling and parameter")
    return 0


# --- --mode local -------------------------------------------------------------------


def _download_model(args: argparse.Namespace, model_dir: Path) -> str:
    s3 = boto3.client("s3")
    model_data = args.model_data or newest_model_data(s3, args.bucket)
    bucket, key = _split_s3_uri(model_data)
    archive = model_dir.with_name("model.tar.gz")
    archive.parent.mkdir(parents=True, exist_ok=True)
    try:
        s3.download_file(bucket, key, str(archive))
    except ClientError as error:
        raise DeployError(f"cannot download {model_data}: {error}") from error
    extract_model(archive, model_dir)
    return model_data


def deploy_local(args: argparse.Namespace) -> int:
    from local_aws import supervisor
    from local_aws.endpoint.server import serve

    name = args.endpoint_name
    daemon = supervisor.Daemon(name, args.state_dir)
    try:
        # The name is held from here on: two deploys of one name cannot both go on.
        with daemon.claim() as claim:
            model_dir = args.state_dir / name / "model"
            model_data = _download_model(args, model_dir)
            config = endpoint_config.from_args(
                args, model_dir=model_dir.resolve(), endpoint_name=name, capture_bucket=args.bucket
            )
            publish = "AWS_ENDPOINT_URL" in os.environ
            if args.foreground:
                claim.hold_here()
                if publish:
                    publish_parameter(args.parameter_name, name)
                print(f"serving {model_data} as local endpoint {name} (Ctrl-C stops it)")
                return serve(config)
            readiness = supervisor.Readiness(
                config.host, config.port, "/ping", LOCAL_READY_TIMEOUT_SECONDS
            )
            pid = claim.start(
                [sys.executable, "-m", "local_aws.endpoint", *config.to_argv()], readiness
            )
    except supervisor.AlreadyRunning as error:
        raise DeployError(f"local endpoint {error}: --stop it first") from error
    except supervisor.SupervisorError as error:
        raise DeployError(str(error)) from error
    if publish:
        publish_parameter(args.parameter_name, name)
    url = readiness.url().removesuffix("/ping")
    print(
        f"local endpoint {name} serves {model_data} on {url} (pid {pid}, log "
        f"{daemon.log_file}); boto3 reaches it with AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={url}"
    )
    return 0


def stop_local(state_dir: Path, endpoint_name: str, parameter_name: str) -> int:
    from local_aws import supervisor

    try:
        outcome = supervisor.Daemon(endpoint_name, state_dir).stop(LOCAL_STOP_TIMEOUT_SECONDS)
    except supervisor.SupervisorError as error:
        raise DeployError(str(error)) from error
    print(f"local endpoint {endpoint_name} {outcome}")
    if "AWS_ENDPOINT_URL" in os.environ:
        delete_parameter(parameter_name, endpoint_name)
    return 0
