"""`python -m training_job image build|push|show`: the serving image (the repository's
Dockerfile: the model server, training_job/code/serve.py) built, published to ECR in the
region, scanned, and its digest recorded for the model registry.

  build   ENGINE build -t scones-model-server:TAG . with the first of docker, podman and
          buildah on PATH (TAG: the commit, or --tag); without one it says so and stops.
  push    build, then in the region: the ECR repository (created with scan on push and
          immutable tags), the registry's enhanced scanning (Amazon Inspector) on push for
          it, the engine logged in with an ECR token, the image pushed; its digest
          (DescribeImages) is recorded as REPOSITORY_URI@sha256:... in the SSM parameter
          /scones-unlimited/serving-image. `train` and `models register` give every new
          PyTorch version that image by digest and refuse where none is recorded (no
          fallback to AWS's out-of-patch PyTorch 2.6 container); `deploy` and `rollout`
          serve a version's own image. The local AWS records one of its own at start.
  show    the image recorded in the region, if any.

ECR rules relied on (Amazon ECR API reference): CreateRepository's
imageScanningConfiguration.scanOnPush and imageTagMutability=IMMUTABLE;
PutRegistryScanningConfiguration replaces the registry's whole configuration, and with
scanType ENHANCED the rules' scanFrequency is SCAN_ON_PUSH or CONTINUOUS_SCAN, each rule
holding repositoryFilters of filterType WILDCARD (so the rules already there are kept);
GetAuthorizationToken's token is base64 "AWS:password" for the registry's endpoint.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import subprocess
from typing import Any

import boto3

from training_job.models.serving_image import (
    DOCKERFILE,
    IMAGE_PARAMETER,
    REPO_ROOT,
    REPOSITORY,
    ImageError,
    prepare_repository,
    pushed_digest,
    record_image,
    require_recorded_image,
)
from training_job.provenance import git_commit

ENGINES = ("docker", "podman", "buildah")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "image",
        help="build and publish the serving image (the model server) to ECR",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="image_command", required=True, metavar="SUBCOMMAND")
    for name, help_text in (
        ("build", "build the image with docker, podman or buildah"),
        ("push", "build, push to ECR in the region (scanned) and record the digest"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--tag", help="the image tag (default: the current commit)")
        command.set_defaults(func=build if name == "build" else push)
    show = commands.add_parser("show", help="the serving image recorded in the region")
    show.set_defaults(func=show_recorded)


def find_engine() -> str:
    """The first container engine on PATH; ImageError naming all three when none is."""
    for engine in ENGINES:
        if shutil.which(engine):
            return engine
    raise ImageError(
        "no container engine to build the serving image with: none of "
        f"{', '.join(ENGINES)} is on PATH. Install one (or run this on a machine that has "
        "one); everything else (the server's tests, `deploy --mode local`) needs none."
    )


def default_tag() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = ""
    return commit or "latest-build"


def _run(argv: list[str], stdin: str | None = None) -> None:
    print("$ " + " ".join(argv), flush=True)
    result = subprocess.run(argv, input=stdin, text=True, check=False)
    if result.returncode != 0:
        raise ImageError(f"{argv[0]} {argv[1]} failed with status {result.returncode}")


def build_image(engine: str, tag: str) -> str:
    """Build the image as REPOSITORY:TAG, recording the commit its code came from."""
    local = f"{REPOSITORY}:{tag}"
    commit = f"SCONES_GIT_COMMIT={git_commit()}"
    _run(
        [engine, "build", "--build-arg", commit, "-t", local, "-f", str(DOCKERFILE), str(REPO_ROOT)]
    )
    return local


def build(args: argparse.Namespace) -> int:
    local = build_image(find_engine(), args.tag or default_tag())
    print(f"built {local}")
    return 0


def push(args: argparse.Namespace) -> int:
    engine = find_engine()  # before any AWS call: nothing is created without one
    tag = args.tag or default_tag()
    local = build_image(engine, tag)
    session = boto3.session.Session()
    ecr, ssm = session.client("ecr"), session.client("ssm")
    repository_uri = prepare_repository(ecr)
    authorization = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = (
        base64.b64decode(authorization["authorizationToken"]).decode().partition(":")
    )
    registry_host = repository_uri.split("/", 1)[0]
    _run([engine, "login", "--username", user, "--password-stdin", registry_host], password)
    remote = f"{repository_uri}:{tag}"
    _run([engine, "tag", local, remote])
    _run([engine, "push", remote])
    image = record_image(ssm, repository_uri, pushed_digest(ecr, tag))
    print(f"serving image {image} recorded in {IMAGE_PARAMETER} ({session.region_name})")
    return 0


def show_recorded(args: argparse.Namespace) -> int:
    session = boto3.session.Session()
    print(require_recorded_image(session.client("ssm"), str(session.region_name)))
    return 0
