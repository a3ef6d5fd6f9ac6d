"""What a deployment does in either mode, shared by `deploy` (--mode sagemaker), `rollout`
and the local endpoint (local_aws/endpoint/daemon.py, `deploy --mode local`): the
endpoint's default name, the error a deployment that cannot go on raises, the served
model.tar.gz located and unpacked safely, and what a deployment publishes for the rest of
the stack: the SSM parameter naming the endpoint, which serverless.yml reads for the
handlers, and the served model's monitoring baseline where the scheduled monitor reads it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import boto3
from botocore.exceptions import ClientError

from contract.aws_errors import error_code
from contract.capture import MAX_BASELINE_BYTES, MONITOR_BASELINE_KEY
from contract.s3 import S3UriError, parse_s3_object_uri
from training_job.errors import CommandError
from training_job.models import archive as model_archive

DEFAULT_ENDPOINT_NAME = "scones-image-classifier"
BASELINE_FILE = "baseline.json"


class DeployError(CommandError):
    """A deployment that cannot go on, with a message for the user."""


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) by contract.s3's rule, as a DeployError when `uri` breaks it."""
    try:
        return parse_s3_object_uri(uri)
    except S3UriError as error:
        raise DeployError(str(error)) from None


def extract_model(archive: Path, destination: Path) -> Path:
    """Unpack model.tar.gz safely (training_job.models.archive, which the monitor uses too)."""
    try:
        return model_archive.extract_model(archive, destination)
    except model_archive.ModelArchiveError as error:
        raise DeployError(str(error)) from error


def publish_parameter(name: str, endpoint_name: str) -> None:
    boto3.client("ssm").put_parameter(
        Name=name,
        Value=endpoint_name,
        Type="String",
        Overwrite=True,
        Description="The classifier endpoint the workflow's handlers invoke",
    )
    print(f"published {endpoint_name} as SSM parameter {name}")


def publish_baseline(
    bucket: str, endpoint_name: str, model_data: str, model_dir: Path | None
) -> None:
    """Copy the served model's baseline.json to where the scheduled monitor reads it by
    default (MONITOR_BASELINE_KEY), from the unpacked model or streamed out of its archive.
    A model without a readable baseline stays deployed: the monitor logs that it waits."""
    key = MONITOR_BASELINE_KEY.format(endpoint=endpoint_name)
    s3 = boto3.client("s3")
    document: bytes | None = None
    problem = f"{model_data} holds no {BASELINE_FILE}"
    try:
        if model_dir is not None:
            path = model_dir / BASELINE_FILE
            document = path.read_bytes() if path.is_file() else None
        else:
            source_bucket, source_key = split_s3_uri(model_data)
            body = s3.get_object(Bucket=source_bucket, Key=source_key)["Body"]
            with body:
                document = model_archive.read_member(body, BASELINE_FILE, MAX_BASELINE_BYTES)
    except (model_archive.ModelArchiveError, ClientError, OSError) as error:
        problem = f"cannot read {BASELINE_FILE} from {model_data}: {error}"
    if document is None:
        print(
            f"warning: {problem}; the scheduled monitor waits for one at s3://{bucket}/{key} "
            "(python -m training_job monitor baseline builds one)",
            file=sys.stderr,
        )
        return
    s3.put_object(Bucket=bucket, Key=key, Body=document, ContentType="application/json")
    print(f"published the model's monitoring baseline at s3://{bucket}/{key}")


def delete_parameter(name: str, endpoint_name: str) -> None:
    """Remove the parameter only while it still names this endpoint: once another endpoint
    of the stage published its name there, the workflow must keep using that one."""
    ssm = boto3.client("ssm")
    try:
        current = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        if current != endpoint_name:
            print(f"kept SSM parameter {name}: it names {current}, not {endpoint_name}")
            return
        ssm.delete_parameter(Name=name)
    except ClientError as error:
        if error_code(error) != "ParameterNotFound":
            raise


# --- --mode sagemaker ---------------------------------------------------------------
