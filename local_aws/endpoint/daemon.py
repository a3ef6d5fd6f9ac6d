"""`python -m training_job deploy --mode local`: the classifier served here, in the background.

training_job/serving/deploy.py looks this module up through training_job/local_mode.py (the one
seam from the product to the emulator) and calls `add_arguments` for its `--mode local`
options, then `start` or `stop`. `start` downloads the model.tar.gz that deploy chose,
serves it with the same inference script on 127.0.0.1 (local_aws/endpoint), and
supervises that process with local_aws.supervisor (pid and lock files, readiness on
/ping, a clean stop), as `python -m local_aws up` supervises the local AWS. With `--role`
the endpoint reads the model and writes captures as that role, assumed in the local AWS
as SageMaker assumes it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from contract.decisions import variant_for_version
from local_aws import iam, model_packages, service_roles, supervisor
from local_aws.endpoint import config as endpoint_config
from training_job.models import serving_image
from training_job.serving import capture, deployment
from training_job.serving.deployment import DeployError

STATE_DIR = Path(".local") / "endpoints"
READY_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 90.0
SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
# The local AWS's record of the endpoint names the container as a placeholder: the
# local endpoint runs the serving image's model server (training_job/code/serve.py) itself.
LOCAL_IMAGE = "local-endpoint/pytorch-inference"
LOCAL_INSTANCE_TYPE = "ml.m5.xlarge"
# Without --role the endpoint acts with the operator's credentials; the record still
# needs an execution role ARN, as CreateModel does.
OPERATOR_ROLE = "arn:aws:iam::123456789012:role/local-endpoint-operator"
# What the endpoint's process must not inherit when it acts as the execution role: boto3
# reads keys from the environment first, so the operator's would be used instead.
OPERATOR_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
)


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """deploy's `--mode local` options: the endpoint's serving options and where its
    files go. (`--capture-sampling` among them applies to --mode sagemaker too.)"""
    endpoint_config.add_arguments(group)
    group.add_argument(
        "--foreground",
        action="store_true",
        help="serve in this process until Ctrl-C instead of in the background",
    )
    group.add_argument(
        "--state-dir",
        type=Path,
        default=STATE_DIR,
        help="where the pid, lock and log files, the extracted model and the capture spool "
        "go (default: %(default)s)",
    )


def assume_execution_role(role_arn: str, endpoint_name: str) -> dict[str, str]:
    """The endpoint process's AWS credentials: the execution role's, assumed in the local
    AWS as SageMaker assumes it for the endpoint (its trust policy must let
    sagemaker.amazonaws.com assume it with this account and the endpoint's ARN as
    aws:SourceAccount and aws:SourceArn), so the role's policy is what lets the endpoint
    read its model and write its captures."""
    session = boto3.session.Session()
    account = session.client("sts").get_caller_identity()["Account"]
    source_arn = (
        f"arn:aws:sagemaker:{session.region_name}:{account}:endpoint/{endpoint_name.lower()}"
    )
    try:
        credentials, expires = service_roles.assume_role_for_service_through_api(
            session, role_arn, SAGEMAKER_PRINCIPAL, source_arn, f"local-endpoint-{endpoint_name}"
        )
    except iam.AccessDenied as denied:
        raise DeployError(f"--role {role_arn}: {denied}") from None
    print(
        f"the endpoint acts as {role_arn} (assumed by {SAGEMAKER_PRINCIPAL} for {source_arn}; "
        f"the credentials expire at {expires:%Y-%m-%d %H:%M:%S %Z}, which the local AWS "
        "does not enforce)"
    )
    return credentials.environment()


def _acting_as(credentials: dict[str, str] | None) -> dict[str, str]:
    """This process's environment, with the role's credentials instead of the operator's."""
    environment = dict(os.environ)
    if credentials is not None:
        for name in OPERATOR_CREDENTIAL_VARIABLES:
            environment.pop(name, None)
        environment.update(credentials)
    return environment


def _download_model(
    args: argparse.Namespace, model_dir: Path, credentials: dict[str, str] | None
) -> str:
    # deploy chose an approved version and made the SageMaker model from its package;
    # the endpoint reads what the package names with the execution role when there is
    # one, as SageMaker does.
    try:
        source = model_packages.serving_source(boto3.client("sagemaker"), args.model_name)
    except model_packages.ModelSourceError as error:
        raise DeployError(str(error)) from None
    if not serving_image.is_pytorch_image(source.image):
        raise DeployError(
            f"{source.package_arn} runs {source.image}: the local endpoint serves only the "
            "project's serving image or the PyTorch inference container (train --algorithm "
            "pytorch); serve the built-in algorithm's versions with --mode sagemaker"
        )
    model_data = source.model_data_url
    reader: Any = boto3.client(
        "s3",
        aws_access_key_id=(credentials or {}).get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=(credentials or {}).get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=(credentials or {}).get("AWS_SESSION_TOKEN"),
    )
    bucket, key = deployment.split_s3_uri(model_data)
    archive = model_dir.with_name("model.tar.gz")
    archive.parent.mkdir(parents=True, exist_ok=True)
    try:
        reader.download_file(bucket, key, str(archive))
    except ClientError as error:
        raise DeployError(f"cannot download {model_data}: {error}") from error
    deployment.extract_model(archive, model_dir)
    return model_data


def check(args: argparse.Namespace) -> None:
    """Refuse a --state-dir this deploy could not write its pid, log and model to, before
    anything is made (it failed with a traceback once the model was made). Nothing is
    created here: the nearest existing folder must be one this user may write in."""
    existing = (args.state_dir / args.endpoint_name).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problem = f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        return
    raise DeployError(f"--state-dir {args.state_dir} cannot be used: {problem}")


def start(args: argparse.Namespace) -> int:
    """Serve the model as a background endpoint (or here, with --foreground), once ready."""
    from local_aws.endpoint.server import serve  # torch: only when serving here

    name = args.endpoint_name
    daemon = supervisor.Daemon(name, args.state_dir)
    if args.role:
        credentials: dict[str, str] | None = assume_execution_role(args.role, name)
    else:
        credentials = None
        print(
            "note: no --role: the endpoint reads the model and writes captures with your own "
            "credentials, so the SageMaker execution role's policy is not proven "
            "(docs/local-mode.md, IAM)",
            file=sys.stderr,
        )
    try:
        # The name is held from here on: two deploys of one name cannot both go on.
        with daemon.claim() as claim:
            model_dir = args.state_dir / name / "model"
            model_data = _download_model(args, model_dir, credentials)
            config = endpoint_config.from_args(
                args,
                model_dir=model_dir.resolve(),
                endpoint_name=name,
                capture_bucket=args.bucket,
                variant=variant_for_version(args.model_version.version),
            )
            if args.foreground:
                claim.hold_here()
                _record(args)
                if args.publish_parameter:
                    deployment.publish_parameter(args.parameter_name, name)
                print(f"serving {model_data} as local endpoint {name} (Ctrl-C stops it)")
                operator = boto3.client("sagemaker")  # made before the role's keys replace ours
                os.environ.clear()  # the workers this starts inherit the role's credentials
                os.environ.update(_acting_as(credentials))
                try:
                    return serve(config)
                finally:  # stopped here: the record goes with it, as --stop removes it
                    model_packages.forget_endpoint(operator, name)
            readiness = supervisor.Readiness(
                config.host, config.port, "/ping", READY_TIMEOUT_SECONDS
            )
            pid = claim.start(
                [sys.executable, "-m", "local_aws.endpoint", *config.to_argv()],
                readiness,
                _acting_as(credentials),
            )
    except supervisor.AlreadyRunning as error:
        raise DeployError(f"local endpoint {error}: --stop it first") from error
    except supervisor.SupervisorError as error:
        raise DeployError(str(error)) from error
    try:
        _record(args)
    except (ClientError, BotoCoreError) as error:
        daemon.stop(STOP_TIMEOUT_SECONDS)  # an endpoint the local AWS does not know is no use
        raise DeployError(f"the local AWS did not record endpoint {name}: {error}") from error
    try:
        if args.publish_parameter:
            deployment.publish_parameter(args.parameter_name, name)
        deployment.publish_baseline(args.bucket, name, model_data, model_dir)
    except BaseException:
        # A deploy that failed leaves nothing behind: no endpoint answering, no record, no
        # parameter naming it (deploy deletes the model).
        daemon.stop(STOP_TIMEOUT_SECONDS)
        model_packages.forget_endpoint(boto3.client("sagemaker"), name)
        if args.publish_parameter:
            deployment.delete_parameter(args.parameter_name, name)
        raise
    url = readiness.url().removesuffix("/ping")
    print(
        f"local endpoint {name} serves {model_data} on {url} (pid {pid}, log "
        f"{daemon.log_file}); boto3 reaches it with AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={url}"
    )
    return 0


def _record(args: argparse.Namespace) -> None:
    variant = variant_for_version(args.model_version.version)
    model_packages.record_endpoint(
        boto3.client("sagemaker"),
        args.endpoint_name,
        args.model_name,
        variant,
        capture_uri=capture.destination_uri(args.bucket) if args.bucket else None,
    )


def stop(args: argparse.Namespace) -> int:
    """Stop the background endpoint (a clean SIGTERM: every captured request is written
    first) and withdraw its parameter, as --mode sagemaker --delete does."""
    try:
        outcome = supervisor.Daemon(args.endpoint_name, args.state_dir).stop(STOP_TIMEOUT_SECONDS)
    except supervisor.SupervisorError as error:
        raise DeployError(str(error)) from error
    print(f"local endpoint {args.endpoint_name} {outcome}")
    model_packages.forget_endpoint(boto3.client("sagemaker"), args.endpoint_name)
    if args.publish_parameter:
        deployment.delete_parameter(args.parameter_name, args.endpoint_name)
    return 0
