"""`python -m training_job models`: the model registry, version by version.

Every trained model is a version of a SageMaker model package group (training_job/
registry.py), pending manual approval. These commands show the versions side by side
with their test metrics (accuracy, calibration error, the share the confidence gate
passes and the accuracy of what it passes), mark the one the endpoint serves, and
approve or reject a version with the reason, which `deploy` then serves or refuses:
  list                  the newest versions, side by side, the deployed one marked *
  show VERSION          one version in full: its metrics, data, commit, image, approval
  approve VERSION       mark it Approved (UpdateModelPackage), with --description
  reject VERSION        mark it Rejected, with --description
  register              register a training job's existing output as a new version
list and show warn (on stderr) of a version that serves AWS's out-of-patch PyTorch 2.6
container, as versions registered before the project's serving image do.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import boto3

from contract import shown
from contract.s3 import S3UriError, parse_s3_object_uri
from contract.sagemaker_names import NAME_PATTERN
from training_job.arguments import bounded, endpoint_name
from training_job.data.bucket import BucketError, require_region
from training_job.errors import UsageError
from training_job.models import registry
from training_job.serving.deployment import DEFAULT_ENDPOINT_NAME
from training_job.training.launch import ALGORITHMS

MAX_VERSION = 999_999_999  # SageMaker's versioned ARNs end in /1 to /999999999
DEFAULT_LIMIT = 20
COLUMNS = (
    ("version", 8),
    ("status", 22),
    ("created (UTC)", 17),
    ("test acc", 9),
    ("ECE", 7),
    ("past gate", 10),
    ("acc past", 9),
    ("commit", 13),
    ("training job", 0),
)


_version = bounded(
    int, f"a version number (a whole number from 1 to {MAX_VERSION})", 1, MAX_VERSION
)

_limit = bounded(int, "a number from 1 to 1000", 1, 1000)


def _s3_object(text: str) -> str:
    try:
        parse_s3_object_uri(text)
    except S3UriError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models",
        help="the model registry: list versions with their metrics, approve or reject one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")

    listing = commands.add_parser(
        "list", help="the newest versions side by side, the deployed one marked *"
    )
    listing.add_argument(
        "--limit",
        type=_limit,
        default=DEFAULT_LIMIT,
        help="how many of the newest versions (default: %(default)s)",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per version")

    show = commands.add_parser("show", help="one version in full")
    show.add_argument("version", type=_version, help="the version number")

    for name, status in (("approve", registry.APPROVED), ("reject", registry.REJECTED)):
        command = commands.add_parser(
            name,
            help=f"mark a version {status}, with the reason",
            description=f"Mark a version {status} (UpdateModelPackage). SageMaker lets a "
            "version's status change either way later; the description records why.",
        )
        command.add_argument("version", type=_version, help="the version number")
        command.add_argument(
            "--description",
            required=True,
            help="why (ApprovalDescription, one line, at most 1,024 characters)",
        )
        command.set_defaults(status=status)

    adding = commands.add_parser(
        "register",
        help="register a training job's output (model.tar.gz) as a new version",
        description="Register what a training job wrote (train registers its own model "
        "unless --no-register): a new version pending manual approval, with the metrics "
        "from metrics.json beside model.tar.gz (the job's final metrics for --algorithm "
        "builtin).",
    )
    adding.add_argument(
        "--model-data",
        type=_s3_object,
        required=True,
        help="s3://BUCKET/models/JOB/output/model.tar.gz",
    )
    adding.add_argument(
        "--manifest",
        type=_s3_object,
        required=True,
        help="the training data's manifest.json the job read (s3://BUCKET/manifest.json)",
    )
    adding.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        default="pytorch",
        help="what trained it, which decides its serving image (default: %(default)s)",
    )
    adding.add_argument(
        "--training-job",
        help="the job's name (default: the folder under models/ in --model-data)",
    )

    for command in commands.choices.values():
        registry.add_group_option(command)
        if command.prog.split()[-1] in ("list", "show"):
            command.add_argument(
                "--endpoint-name",
                type=endpoint_name,
                default=DEFAULT_ENDPOINT_NAME,
                help="the endpoint whose served version is marked (default: %(default)s)",
            )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sm = boto3.client("sagemaker")
    command = args.models_command
    if command == "register":
        return register_output(args, sm)
    if command == "list":
        found = registry.versions(sm, args.model_group, args.limit)
        served = registry.deployed_packages(sm, args.endpoint_name)
        if args.json:
            for model_version in found:
                print(json.dumps(as_json(model_version, served)))
        else:
            print(format_table(found, served, args.model_group, args.endpoint_name))
        warn_out_of_patch(found)
        return 0
    model_version = registry.version(sm, args.model_group, args.version)
    if command == "show":
        served = registry.deployed_packages(sm, args.endpoint_name)
        print(format_version(model_version, served, args.endpoint_name))
        warn_out_of_patch([model_version])
        return 0
    before = model_version.status
    if before == args.status:
        print(f"version {model_version.version} is already {before}; description updated")
    changed = registry.set_status(sm, model_version, args.status, args.description)
    print(
        f"version {changed.version} of {changed.group}: {before} -> {changed.status} "
        f"({shown(changed.approval_description)})"
    )
    return 0


def warn_out_of_patch(found: list[registry.ModelVersion]) -> None:
    """A warning line (on stderr, so --json stays JSON) for each version that serves an
    out-of-patch image."""
    for model_version in found:
        warning = registry.out_of_patch_warning(model_version)
        if warning is not None:
            print(warning, file=sys.stderr)


def register_output(args: argparse.Namespace, sm: Any) -> int:
    job = args.training_job
    if job is None:
        # models/<job>/output/model.tar.gz, as train writes it.
        parts = parse_s3_object_uri(args.model_data)[1].split("/")
        job = parts[-3] if len(parts) >= 3 and parts[-2] == "output" else ""
    if not NAME_PATTERN.fullmatch(job):
        raise UsageError(
            f"cannot tell the training job's name from {shown(args.model_data)}: "
            "pass --training-job"
        )
    session = boto3.session.Session()
    s3 = session.client("s3")
    # The region rule `--region` states: SageMaker serves a version only from its region.
    try:
        for bucket in sorted(
            {parse_s3_object_uri(uri)[0] for uri in (args.model_data, args.manifest)}
        ):
            require_region(s3, bucket)
    except BucketError as error:
        raise registry.RegistryError(str(error)) from error
    registration = registry.registration_for_output(
        s3,
        sm,
        group=args.model_group,
        model_data=args.model_data,
        algorithm=args.algorithm,
        training_job=job,
        manifest_uri=args.manifest,
        region=session.region_name,
    )
    model_version = registry.register(sm, s3, registration)
    print(
        f"registered {args.model_data} as version {model_version.version} of "
        f"{args.model_group} ({model_version.status})"
    )
    return 0


def _figure(model_version: registry.ModelVersion, key: str) -> str:
    value = model_version.metadata.get(key, registry.NOT_MEASURED)
    try:
        return f"{float(value):.4f}"
    except ValueError:
        return registry.NOT_MEASURED


def _commit(model_version: registry.ModelVersion) -> str:
    commit = model_version.metadata.get("code_commit") or model_version.commit or "?"
    return "unknown" if commit.startswith("unknown") else commit[:12]


def format_table(
    found: list[registry.ModelVersion],
    served: dict[str, str],
    group: str,
    endpoint_name: str,
) -> str:
    if not found:
        return f"model group {group} has no versions yet"
    lines = ["  " + "".join(f"{title:<{width}}" if width else title for title, width in COLUMNS)]
    for model_version in found:
        marker = "*" if model_version.arn in served else " "
        cells = [
            str(model_version.version),
            model_version.status,
            model_version.created,
            _figure(model_version, "test_accuracy"),
            _figure(model_version, "calibration_error"),
            _figure(model_version, "share_past_gate"),
            _figure(model_version, "accuracy_past_gate"),
            _commit(model_version),
            model_version.metadata.get("training_job", ""),
        ]
        lines.append(
            f"{marker} "
            + "".join(
                f"{cell:<{width}}" if width else cell
                for cell, (_, width) in zip(cells, COLUMNS, strict=True)
            ).rstrip()
        )
    deployed = [v for v in found if v.arn in served]
    lines.append(
        f"* served by endpoint {endpoint_name} (variant "
        + ", ".join(served[v.arn] for v in deployed)
        + ")"
        if deployed
        else f"(endpoint {endpoint_name} serves none of these versions)"
    )
    return "\n".join(lines)


def format_version(
    model_version: registry.ModelVersion, served: dict[str, str], endpoint_name: str
) -> str:
    metadata = model_version.metadata
    rows = [
        ("version", f"{model_version.version} of {model_version.group}"),
        ("status", model_version.status),
        ("approval note", model_version.approval_description or "-"),
        (
            "deployed",
            f"yes: endpoint {endpoint_name}, variant {served[model_version.arn]}"
            if model_version.arn in served
            else f"no (not on endpoint {endpoint_name})",
        ),
        ("created (UTC)", model_version.created),
        ("test accuracy", _figure(model_version, "test_accuracy")),
        ("calibration error", _figure(model_version, "calibration_error")),
        ("share past the gate", _figure(model_version, "share_past_gate")),
        ("accuracy past gate", _figure(model_version, "accuracy_past_gate")),
        ("training job", metadata.get("training_job", "?")),
        ("algorithm", metadata.get("algorithm", "?")),
        ("training data", metadata.get("training_data_manifest", "?")),
        ("code commit", model_version.commit or metadata.get("code_commit", "?")),
        ("model data", model_version.model_data),
        ("image", model_version.image),
        ("quality report", model_version.quality_uri or "-"),
        ("package ARN", model_version.arn),
    ]
    return "\n".join(f"{name:<21}{value}" for name, value in rows)


def as_json(model_version: registry.ModelVersion, served: dict[str, str]) -> dict[str, Any]:
    return {
        "version": model_version.version,
        "status": model_version.status,
        "created": model_version.created,
        "deployed_variant": served.get(model_version.arn),
        "metadata": model_version.metadata,
        "approval_description": model_version.approval_description,
        "model_data": model_version.model_data,
        "image": model_version.image,
        "arn": model_version.arn,
    }
