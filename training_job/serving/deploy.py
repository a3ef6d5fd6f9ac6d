"""`python -m training_job deploy`: the classifier behind an endpoint, on SageMaker or here.

Both serve an approved version of the model registry (training_job/models/registry.py): the
newest Approved one, or `--model-version N`; never an unregistered model.tar.gz, and
never a version pending approval or rejected (`python -m training_job models approve`).
`--mode sagemaker` creates the SageMaker model from that version's package (its image
and model.tar.gz), an endpoint configuration whose variant is named after the version
(`v<N>`) with data capture to s3://BUCKET/data_capture, the endpoint, and target-tracking
autoscaling on invocations per instance; `--delete` removes all of it. `--mode local`
creates the same model in the local AWS and serves the version's model.tar.gz with the
same inference script on 127.0.0.1 (local_aws/endpoint/daemon.py), in the background
until `--stop`;
with `--role` it reads the model and writes captures as that role, assumed in the local
AWS as SageMaker assumes it. An option of one mode is refused in the other. Both publish
the endpoint's name as an SSM parameter, which serverless.yml reads for the handlers
(`--no-publish-parameter` to leave it alone), and withdraw it on --delete/--stop.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import tarfile
import time
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError

from contract.aws_errors import error_code
from contract.decisions import variant_for_version
from training_job import local_mode, log_retention
from training_job.arguments import bounded, endpoint_name, positive_int
from training_job.data.bucket import BucketError, require_region
from training_job.errors import UsageError
from training_job.models import registry, serving_image
from training_job.modes import options_of, refuse_other_modes
from training_job.serving import autoscaling, capture
from training_job.serving.deployment import (
    DEFAULT_ENDPOINT_NAME,
    DeployError,
    delete_parameter,
    publish_baseline,
    publish_parameter,
    split_s3_uri,
)

# One parameter per stage (serverless.yml reads /scones-unlimited/${sls:stage}/endpoint-name),
# so dev and prod never share an endpoint.
PARAMETER_NAME_TEMPLATE = "/scones-unlimited/{stage}/endpoint-name"
STAGE_PATTERN = re.compile(r"^[a-zA-Z0-9-]{1,32}$")
# What training_job/code/inference.py needs in the archive: the container runs code/ from it.
SERVABLE_MEMBERS = ("model.pth", "model.json", "code/inference.py")


# One instance serves hundreds of requests a second; a target past 100x the measured
# rate would never scale out at all.
_target_invocations = bounded(
    float,
    "a number of invocations per instance per minute from 1 to "
    f"{100 * autoscaling.DEFAULT_TARGET_INVOCATIONS_PER_MINUTE}",
    1,
    100 * autoscaling.DEFAULT_TARGET_INVOCATIONS_PER_MINUTE,
)


def _stage(text: str) -> str:
    if not STAGE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a stage name (letters, digits, -)")
    return text


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
        help="the project bucket (needed to deploy, not to --delete or --stop): capture "
        "goes to s3://BUCKET/data_capture/ and the monitor's baseline to monitoring/",
    )
    registry.add_group_option(parser)
    parser.add_argument(
        "--model-version",
        type=positive_int,
        default=None,
        metavar="N",
        help="the approved version of --model-group to serve (default: the newest approved)",
    )
    parser.add_argument(
        "--endpoint-name",
        type=endpoint_name,
        default=DEFAULT_ENDPOINT_NAME,
        help="the endpoint's name (default: %(default)s)",
    )
    parser.add_argument(
        "--stage",
        type=_stage,
        help="the serverless.yml stage whose workflow uses this endpoint: its name goes to "
        "the SSM parameter " + PARAMETER_NAME_TEMPLATE.format(stage="STAGE") + " (default: "
        "dev with --mode sagemaker, local with --mode local, as `sls deploy --stage` uses)",
    )
    parser.add_argument(
        "--parameter-name",
        help="SSM parameter that receives the endpoint's name instead of the stage's",
    )
    parser.add_argument(
        "--role",
        help="the SageMaker execution role's ARN, which SageMaker assumes to read the model "
        "and write the captured traffic (required with --mode sagemaker). With --mode local "
        "the local AWS's STS gives its credentials, after its trust policy lets "
        "sagemaker.amazonaws.com assume it for the endpoint, and the endpoint reads the "
        "model and writes captures with them; without it, with your own credentials",
    )
    parser.add_argument(
        "--publish-parameter",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="put the endpoint's name into the SSM parameter when deploying, and remove it "
        "on --delete/--stop while it still names this endpoint (default: yes, in both modes)",
    )
    sagemaker = parser.add_argument_group("--mode sagemaker")
    sagemaker.add_argument(
        "--instance-type", default="ml.m5.xlarge", help="instance type (default: %(default)s)"
    )
    sagemaker.add_argument(
        "--min-instances", type=positive_int, default=1, help="autoscaling minimum (default: 1)"
    )
    sagemaker.add_argument(
        "--max-instances", type=positive_int, default=4, help="autoscaling maximum (default: 4)"
    )
    sagemaker.add_argument(
        "--target-invocations",
        type=_target_invocations,
        default=autoscaling.DEFAULT_TARGET_INVOCATIONS_PER_MINUTE,
        help="autoscaling's target of invocations per instance per minute (default: "
        "%(default)s = the measured "
        f"{autoscaling.MEASURED_MAX_RPS_PER_INSTANCE:g} requests/s one instance serves x "
        f"safety factor {autoscaling.SAFETY_FACTOR:g} x 60, AWS's load-test formula; "
        "docs/benchmarks.md, Autoscaling target)",
    )
    log_retention.add_option(
        sagemaker, log_retention.ENDPOINT_LOG_GROUP.format(endpoint="ENDPOINT_NAME")
    )
    sagemaker.add_argument(
        "--delete",
        action="store_true",
        help="tear down the scaling policy, scalable target, endpoint, endpoint "
        "configuration, model and parameter instead of deploying",
    )
    local = parser.add_argument_group(
        "--mode local", "(--capture-sampling applies to --mode sagemaker too)"
    )
    local.add_argument(
        "--stop",
        action="store_true",
        help="stop the background endpoint of this --endpoint-name (a clean SIGTERM: "
        "every captured request is written first) and withdraw its parameter",
    )
    local_mode.backend("deploy").add_arguments(local)
    parser.set_defaults(
        func=run,
        mode_options={
            "sagemaker": options_of(sagemaker),
            # SageMaker's data capture takes the sampling percentage too.
            "local": options_of(local, shared=("capture_sampling",)),
        },
    )


def run(args: argparse.Namespace) -> int:
    refuse_other_modes(args, args.mode_options)
    if args.parameter_name is None:
        stage = args.stage or ("local" if args.mode == "local" else "dev")
        args.parameter_name = PARAMETER_NAME_TEMPLATE.format(stage=stage)
    if not (args.delete or args.stop or args.bucket):
        raise UsageError("--bucket is required to deploy")
    # SageMaker's InitialSamplingPercentage is a whole number: 0.5 is refused here
    # rather than silently becoming 0 (no capture, and no monitoring) on AWS.
    if args.capture_sampling != int(args.capture_sampling):
        raise UsageError(
            f"--capture-sampling {args.capture_sampling:g} is not a whole percentage "
            "(SageMaker takes an integer from 0 to 100)"
        )
    try:
        if args.mode == "sagemaker":
            if args.delete:
                return delete_sagemaker(args)
            return deploy_sagemaker(args)
        backend = local_mode.backend("deploy")
        if args.stop:
            return int(backend.stop(args))
        sm = boto3.client("sagemaker")
        s3 = boto3.client("s3")
        # As with --mode sagemaker, before anything is made: the endpoint writes its
        # captures to this bucket, and every step runs in the bucket's region.
        require_region(s3, args.bucket)
        backend.check(args)
        args.model_version = chosen_version(sm, s3, args.model_group, args.model_version)
        # The SageMaker model, made from the package in the local AWS as on AWS: the local
        # endpoint resolves it to the version's model.tar.gz (local_aws/model_packages.py).
        args.model_name = model_resource_name(args.endpoint_name)
        create_model(sm, args.model_name, args.model_version, args.role)
        try:
            return int(backend.start(args))
        except BaseException:
            _ignore_missing(sm.delete_model, ModelName=args.model_name)
            raise
    except BucketError as error:
        raise DeployError(str(error)) from error


# --- the model version ---------------------------------------------------------------


def chosen_version(sm: Any, s3: Any, group: str, number: int | None) -> registry.ModelVersion:
    """The version to serve: `number` if it is Approved, else the newest Approved one,
    with the very archive that was registered. Anything else is refused: deploy never
    serves an unapproved, unregistered or since-replaced model."""
    try:
        if number is None:
            found = registry.newest_approved(sm, group)
        else:
            found = registry.version(sm, group, number)
            if found.status != registry.APPROVED:
                raise DeployError(
                    f"version {number} of {group} is {found.status}: only Approved versions "
                    f"are served (python -m training_job models approve {number} "
                    "--description ...)"
                )
        registry.require_unchanged(s3, found)
    except registry.RegistryError as error:
        raise DeployError(str(error)) from None
    # Served still (rolling back to an old version is a safeguard), but never silently.
    warning = registry.out_of_patch_warning(found)
    if warning is not None:
        print(warning, file=sys.stderr)
    return found


def model_resource_name(endpoint_name: str) -> str:
    """Model and configuration names carry a timestamp, as the SDK's do, and a random
    tail, so a new deployment never collides with what an old one left, nor with a
    concurrent one (the one that loses removes only its own model)."""
    return f"{endpoint_name[:40]}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def create_model(sm: Any, name: str, version: registry.ModelVersion, role: str | None) -> None:
    """The SageMaker model of a registered version: the package alone says what it runs
    (its image, model.tar.gz and environment), so nothing here can drift from it."""
    request: dict[str, Any] = {
        "ModelName": name,
        "PrimaryContainer": {"ModelPackageName": version.arn},
    }
    if role:
        request["ExecutionRoleArn"] = role
    sm.create_model(**request)


def _endpoint_exists(sagemaker: Any, endpoint_name: str) -> bool:
    try:
        sagemaker.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as error:
        if error_code(error) in ("ValidationException", "ValidationError"):
            return False
        raise
    return True


def deploy_sagemaker(args: argparse.Namespace) -> int:
    if not args.role:
        raise UsageError("--mode sagemaker needs --role (the SageMaker execution role ARN)")
    if args.min_instances > args.max_instances:
        raise UsageError("--min-instances is above --max-instances")
    session = boto3.session.Session()
    s3 = session.client("s3")
    sm = session.client("sagemaker")
    application_autoscaling = session.client("application-autoscaling")
    name = args.endpoint_name
    # SageMaker reads the model and writes captures only in its own region.
    require_region(s3, args.bucket)
    if _endpoint_exists(sm, name):
        raise DeployError(
            f"endpoint {name} exists: delete it first (--delete) or choose another --endpoint-name"
        )
    version = chosen_version(sm, s3, args.model_group, args.model_version)
    model_data = version.model_data
    require_region(s3, split_s3_uri(model_data)[0])
    if serving_image.is_pytorch_image(version.image):
        require_servable(s3, model_data)
    variant = variant_for_version(version.version)
    resource_name = model_resource_name(name)
    created: list[tuple[str, str]] = []  # (kind, name), to remove all of it on failure
    try:
        create_model(sm, resource_name, version, args.role)
        created.append(("model", resource_name))
        sm.create_endpoint_config(
            EndpointConfigName=resource_name,
            ProductionVariants=[
                {
                    "VariantName": variant,
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
        created.append(("endpoint-config", resource_name))
        sm.create_endpoint(EndpointName=name, EndpointConfigName=resource_name)
        created.append(("endpoint", name))
        print(
            f"creating endpoint {name} from version {version.version} of {version.group} "
            f"({model_data}, {version.image}) as variant {variant}; waiting for InService"
        )
        wait_in_service(sm, name)
    except (DeployError, ClientError) as error:
        _remove_created(sm, created)
        undone = ", ".join(f"{kind} {item}" for kind, item in reversed(created)) or "nothing"
        raise DeployError(f"{error} (removed what this deploy created: {undone})") from error
    scaling = autoscaling.Scaling(
        args.min_instances,
        args.max_instances,
        [
            {
                "PolicyName": autoscaling.policy_name(name),
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": autoscaling.target_tracking(
                    args.target_invocations
                ),
            }
        ],
    )
    scaling.apply(application_autoscaling, name, variant)
    log_retention.keep(
        session.client("logs"),
        log_retention.ENDPOINT_LOG_GROUP.format(endpoint=name),
        args.log_retention_days,
    )
    if args.publish_parameter:
        publish_parameter(args.parameter_name, name)
    publish_baseline(args.bucket, name, model_data, None)
    print(
        f"endpoint {name} is InService: {args.min_instances}-{args.max_instances} x "
        f"{args.instance_type}, capture {args.capture_sampling:g}% to "
        f"{capture.destination_uri(args.bucket)}"
    )
    return 0


ENDPOINT_WAIT_SECONDS = 60 * 60  # SageMaker's own waiter gives an endpoint an hour
ENDPOINT_POLL_SECONDS = 30.0


def wait_in_service(sm: Any, name: str, poll_seconds: float = ENDPOINT_POLL_SECONDS) -> None:
    """Wait until the endpoint is InService; a Failed one is an error with SageMaker's
    FailureReason (a container that never answers /ping, no capacity, a quota of 0)."""
    deadline = time.monotonic() + ENDPOINT_WAIT_SECONDS
    while True:
        described = sm.describe_endpoint(EndpointName=name)
        status = described["EndpointStatus"]
        if status == "InService":
            return
        if status not in ("Creating", "Updating", "SystemUpdating"):
            reason = described.get("FailureReason", "SageMaker gave no reason")
            raise DeployError(f"endpoint {name} is {status}: {reason}")
        if time.monotonic() > deadline:
            raise DeployError(f"endpoint {name} is still {status} after an hour")
        time.sleep(poll_seconds)


def _remove_created(sm: Any, created: list[tuple[str, str]]) -> None:
    """Delete what a failed deploy created, newest first; a Failed endpoint can be deleted
    at once, and its configuration and model only after it is gone."""
    for kind, item in reversed(created):
        if kind == "endpoint":
            _ignore_missing(sm.delete_endpoint, EndpointName=item)
            sm.get_waiter("endpoint_deleted").wait(
                EndpointName=item, WaiterConfig={"Delay": 15, "MaxAttempts": 80}
            )
        elif kind == "endpoint-config":
            _ignore_missing(sm.delete_endpoint_config, EndpointConfigName=item)
        else:
            _ignore_missing(sm.delete_model, ModelName=item)


def require_servable(s3: Any, model_data: str) -> None:
    """Refuse an archive the PyTorch serving container cannot serve with our inference.py:
    a package that names the PyTorch image but holds the built-in algorithm's MXNet
    parameters never becomes InService. Reads the archive's headers only."""
    bucket, key = split_s3_uri(model_data)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=body, mode="r|gz") as tar:
            for member in tar:
                seen.add(member.name.removeprefix("./"))
                if seen.issuperset(SERVABLE_MEMBERS):
                    return
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DeployError(f"{model_data} is not a readable model.tar.gz: {error}") from error
    finally:
        body.close()
    missing = ", ".join(name for name in SERVABLE_MEMBERS if name not in seen)
    hint = (
        " It looks like the built-in image-classification algorithm's model (train "
        "--algorithm builtin), registered with the PyTorch image: register it with "
        "`models register --algorithm builtin`, which gives it its own image."
        if any(name.startswith("image-classification") for name in seen)
        else ""
    )
    raise DeployError(f"{model_data} has no {missing}: not a model deploy can serve.{hint}")


def _ignore_missing(call: Any, **kwargs: Any) -> None:
    try:
        call(**kwargs)
    except ClientError as error:
        code = error_code(error)
        if code not in ("ObjectNotFoundException", "ValidationException", "ValidationError"):
            raise


def delete_sagemaker(args: argparse.Namespace) -> int:
    """Remove what deploy_sagemaker created, in the reverse order; missing parts are fine."""
    session = boto3.session.Session()
    sm = session.client("sagemaker")
    application_autoscaling = session.client("application-autoscaling")
    name = args.endpoint_name
    config_names: list[str] = []
    variants: list[str] = []
    if _endpoint_exists(sm, name):
        config_names.append(sm.describe_endpoint(EndpointName=name)["EndpointConfigName"])
        config = sm.describe_endpoint_config(EndpointConfigName=config_names[0])
        variants = [variant["VariantName"] for variant in config["ProductionVariants"]]
    for variant in variants:  # each variant's scaling, before its endpoint goes
        scaling = autoscaling.Scaling.of(application_autoscaling, name, variant)
        if scaling is not None:
            scaling.remove(application_autoscaling, name, variant)
    if config_names:
        sm.delete_endpoint(EndpointName=name)
        sm.get_waiter("endpoint_deleted").wait(
            EndpointName=name, WaiterConfig={"Delay": 15, "MaxAttempts": 80}
        )
    for config_name in config_names:
        described = sm.describe_endpoint_config(EndpointConfigName=config_name)
        sm.delete_endpoint_config(EndpointConfigName=config_name)
        for variant in described["ProductionVariants"]:
            _ignore_missing(sm.delete_model, ModelName=variant["ModelName"])
    if args.publish_parameter:
        delete_parameter(args.parameter_name, name)
    print(f"deleted endpoint {name}, its configuration, model, autoscaling and parameter")
    return 0
