"""`python -m training_job train`: train the classifier on the staged data, here or on SageMaker.

Both modes run the same job: channels `train`, `train_lst`, `test`, `test_lst` from the
bucket that `python -m training_job stage` filled, output under `s3://BUCKET/models/`:
  --mode local      runs the image's training program (training_job/code/container.py
                    train, which runs train.py) here on a job directory laid out as
                    SageMaker's /opt/ml (local_aws/training.py, reached through
                    training_job/local_mode.py), and uploads the artifacts where a job would;
  --mode sagemaker  launches a SageMaker training job through the SageMaker SDK: with
                    --algorithm pytorch, the project's own image (Dockerfile; the same
                    container that serves) runs that script as `train`, by the digest
                    `python -m training_job image push` recorded in the region (refused
                    before anything starts where none is); with --algorithm builtin,
                    the built-in image-classification algorithm, as the reference does.
Either way it ends by printing the test metrics. --mode is required, as deploy's is, and
an option of one mode is refused in the other. A pytorch model is registered (--register,
the default) only with the image `python -m training_job image push` recorded in the
region, by digest, and a SageMaker job runs in it: where none is, train refuses before
the job starts (--mode sagemaker always, --mode local when it would register).

--include-reviewed adds the photos people labelled in the review queue to the training
data (never to validation or test): the channels `reviewed` = s3://BUCKET/reviewed/images/
and `reviewed_lst` = a copy of s3://BUCKET/reviewed/reviewed.lst, checked first and pinned
beside the job's output (training_job/data/reviewed_photos.py); metrics.json's "reviewed"
says how many were added and from which manifest (its URI and SHA-256).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from contract.aws_errors import error_code
from contract.manifest import ManifestError
from contract.s3 import S3UriError, normalise_prefix
from contract.sagemaker_names import NAME_PATTERN
from training_job import local_mode, log_retention
from training_job.arguments import bounded, positive_int
from training_job.data import reviewed_photos
from training_job.data.bucket import BucketError, is_valid_bucket_name, require_region
from training_job.data.manifests import MANIFEST_NAME, Manifest
from training_job.errors import UsageError
from training_job.models import registry
from training_job.models.serving_image import require_recorded_image
from training_job.modes import options_of, refuse_other_modes
from training_job.provenance import git_commit
from training_job.training.job import LaunchError, Plan
from training_job.training.sagemaker_job import DEFAULT_MAX_RUNTIME_MINUTES, train_on_sagemaker

ALGORITHMS = ("pytorch", "builtin")
# The algorithms' names for the hyperparameters both take.
SCRIPT_NAMES = {"epochs": "epochs", "batch-size": "batch-size", "learning-rate": "lr"}
BUILTIN_NAMES = {
    "epochs": "epochs",
    "batch-size": "mini_batch_size",
    "learning-rate": "learning_rate",
}
MAX_MANIFEST_BYTES = 1 << 20
_HYPERPARAMETER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the classifier on the staged data (locally or on SageMaker)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("data and job")
    where.add_argument(
        "--bucket",
        required=True,
        help="the bucket `stage` filled; output goes to s3://BUCKET/models/",
    )
    where.add_argument(
        "--prefix", default="", help="the folder in the bucket `stage` wrote to (default: the root)"
    )
    where.add_argument(
        "--mode",
        choices=("local", "sagemaker"),
        required=True,
        help="local: run the training script here; sagemaker: launch a SageMaker job",
    )
    where.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        default="pytorch",
        help="pytorch: our script, training_job/code/train.py (default); builtin: SageMaker's "
        "image-classification algorithm (--mode sagemaker only)",
    )
    where.add_argument(
        "--job-name",
        help="the training job's name (default: scones-ALGORITHM-YYYY-MM-DD-HH-MM-SS-mmm, "
        "the SDK's form); its output goes to s3://BUCKET/models/JOB_NAME/output/",
    )
    registry.add_group_option(where)
    where.add_argument(
        "--register",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="register the trained model as a new version of --model-group, pending "
        "manual approval, with its test metrics, data manifest and commit (default; "
        "`models register` registers a job's output later)",
    )
    where.add_argument(
        "--include-reviewed",
        action="store_true",
        help="also train on the photos people labelled in the review queue "
        "(s3://BUCKET/reviewed/reviewed.lst and reviewed/images/; training part only, never "
        "validation or test); refused if that manifest is missing, malformed, empty, or names "
        "a photo that is not there or a staged train/test image (--algorithm pytorch only)",
    )
    hps = parser.add_argument_group(
        "hyperparameters",
        "only those given are passed; the script's own defaults are the tuned ones",
    )
    hps.add_argument("--epochs", type=positive_int, help="passes over the training data")
    hps.add_argument(
        "--batch-size", type=positive_int, help="images per step (builtin: mini_batch_size)"
    )
    hps.add_argument(
        "--learning-rate",
        type=_learning_rate,
        help="peak learning rate (train.py: lr, builtin: learning_rate)",
    )
    hps.add_argument("--seed", type=_seed, help="random seed (pytorch only; builtin has none)")
    hps.add_argument(
        "--hyperparameter",
        "-H",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other hyperparameter the algorithm takes, passed as given (repeatable)",
    )
    local = parser.add_argument_group("--mode local")
    local.add_argument(
        "--work-dir",
        type=Path,
        help="keep the job directory (the /opt/ml stand-in) here, a new or empty directory "
        "(default: a temporary one, removed afterwards)",
    )
    cloud = parser.add_argument_group("--mode sagemaker")
    cloud.add_argument("--role", help="the IAM role ARN the job runs as (required)")
    cloud.add_argument(
        "--instance-type",
        help="default: ml.m5.xlarge for pytorch (CPU is enough), ml.p3.2xlarge for builtin "
        "(the algorithm needs a GPU; new accounts often have a quota of 0 for it: check "
        "Service Quotas, SageMaker, 'ml.p3.2xlarge for training job usage')",
    )
    cloud.add_argument(
        "--max-runtime",
        type=_positive_minutes,
        default=DEFAULT_MAX_RUNTIME_MINUTES,
        metavar="MINUTES",
        help="stop the job after this long (MaxRuntime; default: %(default)s minutes; "
        "raise it with --epochs well above the default)",
    )
    cloud.add_argument(
        "--debugger",
        action="store_true",
        help="turn on SageMaker Debugger's hook and Profiler (off by default: they add "
        "a rule job and profile data to every run, and nothing here reads them; with "
        "--algorithm pytorch the hook collects no tensors: the project's image has no "
        "smdebug and train.py registers no hook, which a custom container needs)",
    )
    log_retention.add_option(cloud, log_retention.TRAINING_LOG_GROUP)
    cloud.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for the job, stream its logs and print its metrics (default; Ctrl-C stops "
        "the waiting, not the job), or return once it is created (--no-wait)",
    )
    parser.set_defaults(
        func=main,
        mode_options={"local": options_of(local), "sagemaker": options_of(cloud)},
    )


_positive_minutes = bounded(int, "a number of minutes from 1 to 40320", 1, 28 * 24 * 60)
# The built-in algorithm takes a learning rate in [0, 1] (SageMaker's Image Classification
# hyperparameters); 0 would train nothing, so both scripts get one above 0 and at most 1.
_learning_rate = bounded(float, "a learning rate above 0 and at most 1", 0, 1, above=True)
_seed = bounded(int, "a seed from 0 to 4294967295", 0, 2**32 - 1)


def main(args: argparse.Namespace) -> int:
    """Errors are CommandErrors (and botocore's), printed by training_job/__main__.py."""
    refuse_other_modes(args, args.mode_options)
    try:
        plan = make_plan(args)
        training_image = None
        if plan.algorithm == "pytorch" and (args.mode == "sagemaker" or args.register):
            # Before the job, not after it: a SageMaker job runs in that image, and a model
            # is registered only with it; an hour of training must not end in a refusal.
            session = boto3.session.Session()
            recorded = require_recorded_image(session.client("ssm"), str(session.region_name))
            training_image = recorded if args.mode == "sagemaker" else None
        if plan.reviewed is not None:
            uri = reviewed_photos.pin(boto3.client("s3"), plan.reviewed, plan.reviewed_snapshot_key)
            added = len(plan.reviewed.entries)
            print(f"adding {added} reviewed photos from {plan.reviewed.uri} (pinned as {uri})")
        if args.mode == "local":
            code = int(local_mode.backend("train").run(plan, args.work_dir))
            model_data = plan.model_data() if code == 0 and args.register else None
        else:
            code, model_data = train_on_sagemaker(plan, args, training_image)
        if model_data is not None:
            register_model(plan, args.model_group, model_data)
        return code
    except (ManifestError, BucketError) as error:
        raise LaunchError(str(error)) from error
    except ClientError as error:
        if error_code(error) == "ResourceLimitExceeded":
            raise LaunchError(
                f"AWS refused a request: {error}; the account's SageMaker quota for this "
                "instance type is too low (often 0 for GPU types in new accounts): request an "
                "increase in Service Quotas, SageMaker, '<instance type> for training job "
                "usage', or pass --instance-type"
            ) from error
        raise


def make_plan(args: argparse.Namespace) -> Plan:
    if not is_valid_bucket_name(args.bucket):
        raise UsageError(f"invalid bucket name {args.bucket!r}")
    try:
        prefix = normalise_prefix(args.prefix)  # the rule stage wrote it by
    except S3UriError as error:
        raise UsageError(f"invalid --prefix {error}") from None
    if args.mode == "local" and args.algorithm == "builtin":
        raise UsageError("--algorithm builtin runs only with --mode sagemaker")
    if args.mode == "sagemaker" and not args.role:
        raise UsageError("--mode sagemaker needs --role (the IAM role ARN the job runs as)")
    job_name = args.job_name or default_job_name(args.algorithm)
    if not NAME_PATTERN.fullmatch(job_name):
        raise UsageError(
            f"invalid --job-name {job_name!r}: 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    if args.include_reviewed and args.algorithm == "builtin":
        raise UsageError("--include-reviewed applies to --algorithm pytorch only")
    extra = parse_hyperparameters(args.hyperparameter)
    manifest = read_manifest(args.bucket, prefix)
    reviewed = None
    if args.include_reviewed:
        s3 = boto3.client("s3")
        reviewed = reviewed_photos.read_reviewed(s3, args.bucket, manifest.classes, prefix)
    return Plan(
        bucket=args.bucket,
        prefix=prefix,
        job_name=job_name,
        algorithm=args.algorithm,
        manifest=manifest,
        hyperparameters=hyperparameters_for(args, manifest, extra),
        reviewed=reviewed,
    )


def default_job_name(algorithm: str) -> str:
    """`scones-ALGORITHM-` and a UTC timestamp to the millisecond, like the SDK's names."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(now))
    return f"scones-{algorithm}-{stamp}-{int(now * 1000) % 1000:03d}"


def parse_hyperparameters(pairs: list[str]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not _HYPERPARAMETER_NAME.fullmatch(name) or not value:
            raise UsageError(f"--hyperparameter expects NAME=VALUE, got {pair!r}")
        extra[name] = value
    return extra


def hyperparameters_for(
    args: argparse.Namespace, manifest: Manifest, extra: dict[str, str]
) -> dict[str, Any]:
    given = {
        "epochs": args.epochs,
        "batch-size": args.batch_size,
        "learning-rate": args.learning_rate,
    }
    if args.algorithm == "pytorch":
        chosen = {SCRIPT_NAMES[name]: value for name, value in given.items() if value is not None}
        if args.seed is not None:
            chosen["seed"] = args.seed
        clash = {"classes"} & set(extra)
        if clash:
            raise UsageError("classes come from manifest.json; do not pass them")
        return {**chosen, **extra, "classes": ",".join(manifest.classes)}
    if args.seed is not None:
        raise UsageError("--seed applies to --algorithm pytorch only (builtin has no seed)")
    chosen = {BUILTIN_NAMES[name]: value for name, value in given.items() if value is not None}
    return {
        "image_shape": "3,32,32",
        "num_classes": len(manifest.classes),
        "num_training_samples": manifest.total("train"),
        **chosen,
        **extra,
    }


def read_manifest(bucket: str, prefix: str) -> Manifest:
    s3 = boto3.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error_code(error) in {"404", "NoSuchBucket", "NotFound"}:
            raise LaunchError(
                f"bucket {bucket} does not exist: run `python -m training_job stage "
                f"--bucket {bucket}` first"
            ) from error
        raise
    # A training job reads its channels only from buckets in its own region.
    require_region(s3, bucket)
    key = f"{prefix}{MANIFEST_NAME}"
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error_code(error) in {"404", "NoSuchKey", "NotFound"}:
            raise LaunchError(
                f"s3://{bucket}/{key} not found: run `python -m training_job stage "
                f"--bucket {bucket}{f' --prefix {prefix}' if prefix else ''}` first"
            ) from error
        raise
    if head["ContentLength"] > MAX_MANIFEST_BYTES:
        raise LaunchError(f"s3://{bucket}/{key} is {head['ContentLength']} bytes: not a manifest")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read(MAX_MANIFEST_BYTES + 1)
    try:
        return Manifest.from_json(body)
    except ManifestError as error:
        raise LaunchError(f"s3://{bucket}/{key}: {error}") from error


def register_model(plan: Plan, group: str, model_data: str) -> None:
    """The trained model as a new version of `group`, pending manual approval."""
    session = boto3.session.Session()
    s3 = session.client("s3")
    sm = session.client("sagemaker")
    # The built-in algorithm's job records no commit; this launcher's code is what ran it.
    metrics = (
        {**registry.builtin_metrics(sm, plan.job_name), "git_commit": git_commit()}
        if plan.algorithm == "builtin"
        else None
    )
    registration = registry.registration_for_output(
        s3,
        sm,
        group=group,
        model_data=model_data,
        algorithm=plan.algorithm,
        training_job=plan.job_name,
        manifest_uri=plan.uri(MANIFEST_NAME),
        region=session.region_name,
        metrics=metrics,
    )
    version = registry.register(sm, s3, registration)
    print(
        f"registered as version {version.version} of model group {group} ({version.status}); "
        f"compare it with `python -m training_job models list`, then `models approve "
        f"{version.version} --description ...` before `deploy` serves it"
    )
