"""The local AWS's serving image: recorded at start as `python -m training_job image push`
records a pushed one, so that registration names the project's image by digest here too.

Local mode has no container engine, so nothing is built or pushed: the local AWS's ECR
(moto's) gets the repository `image push` makes and an image manifest put by PutImage
(what an engine's push ends in), whose one layer is named by the SHA-256 of what the
Dockerfile puts into the image from this checkout (the Dockerfile itself and the files
its COPY lines take from the build context: the model server, its requirements). The
image's digest is the SHA-256 of that manifest, as ECR computes it, so it changes exactly
when the server's sources do. It is recorded in the SSM parameter `image push` writes;
`image show`, `train` and `models register` then read it unchanged. The local endpoint
runs this checkout's server for any project image (local_aws/endpoint/container.py).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from contract.aws_errors import error_code
from training_job.models.serving_image import (
    DOCKERFILE,
    REPOSITORY,
    prepare_repository,
    pushed_digest,
    record_image,
)

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
TAG_PREFIX = "local-"


def image_sources(dockerfile: Path = DOCKERFILE) -> list[Path]:
    """The Dockerfile and the files its COPY lines take from the build context (not those
    copied from another stage; globs and folders as the engine expands them, bytecode
    caches left out), in a stable order."""
    context = dockerfile.parent
    text = dockerfile.read_text().replace("\\\n", " ")
    sources: set[Path] = set()
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() != "COPY":
            continue
        if any(word.startswith("--from") for word in words[1:]):
            continue  # from another stage, made of what the lines above copied
        arguments = [word for word in words[1:] if not word.startswith("--")]
        for source in arguments[:-1]:  # the last one is the destination
            sources.update(_copied_files(context, source))
    return [
        dockerfile,
        *sorted(p for p in sources if p.is_file() and "__pycache__" not in p.parts),
    ]


def _copied_files(context: Path, source: str) -> list[Path]:
    """What one COPY source names: a glob's matches, a folder's files, or the file."""
    matches = (
        sorted(context.glob(source)) if any(c in source for c in "*?[") else [context / source]
    )
    return [file for path in matches for file in (path.rglob("*") if path.is_dir() else [path])]


def sources_digest(dockerfile: Path = DOCKERFILE) -> str:
    """sha256:... of the image's sources, each named by its path in the checkout."""
    digest = hashlib.sha256()
    for path in image_sources(dockerfile):
        data = path.read_bytes()
        name = path.relative_to(dockerfile.parent).as_posix().encode()
        digest.update(b"%s\0%d\0" % (name, len(data)) + data)
    return f"sha256:{digest.hexdigest()}"


def image_manifest(sources: str) -> str:
    """A Docker image manifest (schema 2) whose layer is the sources' digest."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": 0, "digest": sources},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "size": 0, "digest": sources}],
        },
        sort_keys=True,
    )


def record_local_image(ecr: Any, ssm: Any, dockerfile: Path = DOCKERFILE) -> str:
    """Put the image `dockerfile` would build (this checkout's) into the local ECR and
    record it; returns REPOSITORY_URI@sha256:..."""
    repository_uri = prepare_repository(ecr)
    sources = sources_digest(dockerfile)
    manifest = image_manifest(sources)
    tag = TAG_PREFIX + sources.removeprefix("sha256:")[:12]
    try:
        ecr.put_image(
            repositoryName=REPOSITORY,
            imageManifest=manifest,
            imageTag=tag,
            # ECR's digest of a manifest is its SHA-256 (moto would hash the layers).
            imageDigest=f"sha256:{hashlib.sha256(manifest.encode()).hexdigest()}",
        )
    except ClientError as error:
        # Tags are immutable: the same sources were recorded by an earlier start.
        if error_code(error) != "ImageAlreadyExistsException":
            raise
    return record_image(ssm, repository_uri, pushed_digest(ecr, tag))
