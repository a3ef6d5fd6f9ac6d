"""Whose captures are whose: the variant that answered each record, its role on the
endpoint now, and the model version (so the baseline) it serves.

Data capture writes each variant's records under its own folder,
`data_capture/<endpoint>/<variant>/YYYY/MM/DD/HH/<file>`, and the endpoint names each
variant after the registered model version it serves (`v<N>`,
contract.decisions.variant_for_version). So `monitor check` and `monitor report` read
each variant apart, in its own key (= time) order, and judge it against the baseline of
the version that answered it: never one variant's records against another version's
baseline, never a shadow's copies mixed into production's window. (Keys sort
lexicographically: read as one stream, v10's records came before v9's, and the "latest"
window after a rollout to v10 was v9's.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import boto3
from botocore.exceptions import ClientError

from contract.aws_errors import error_code
from contract.decisions import UNVERSIONED, version_of_variant
from contract.sagemaker_names import NAME
from training_job.errors import CommandError
from training_job.models import registry
from training_job.monitor.baseline import BaselineError, newest_model
from training_job.monitor.captures import CaptureSource, list_objects
from training_job.serving.capture import CAPTURE_PREFIX

# <variant>/YYYY/MM/DD/HH/<file> at the end of a key (SageMaker's capture layout); a
# variant's name as SageMaker allows it (ProductionVariant.VariantName), so it is also a
# safe folder name for the model and the report.
_VARIANT_IN_KEY = re.compile(r"(?:^|/)(" + NAME + r")/\d{4}/\d{2}/\d{2}/\d{2}/[^/]+$")

PRODUCTION, SHADOW, RETIRED = "production", "shadow", "not on the endpoint now"


@dataclass(frozen=True)
class VariantCaptures:
    """One variant's captures. `variant` is None for objects outside SageMaker's layout:
    they are read together, against --model-data's or --model-dir's baseline (or the
    newest model artifact in the captures' bucket: no version answered them by name)."""

    variant: str | None
    source: CaptureSource
    role: str | None  # PRODUCTION, SHADOW, RETIRED; None when the endpoint is unknown

    @property
    def name(self) -> str:
        return self.variant or "captures"


def variant_of(key: str) -> str | None:
    match = _VARIANT_IN_KEY.search(key)
    return match.group(1) if match else None


def split_by_variant(source: CaptureSource) -> list[VariantCaptures]:
    """The source's captures, one source per variant folder, oldest version first."""
    folders: dict[str, str] = {}
    for key in list_objects(source):
        match = _VARIANT_IN_KEY.search(key)
        if match is None:  # outside the layout: one stream, as written
            return [VariantCaptures(None, source, None)]
        folders.setdefault(match.group(1), key[: match.end(1)] + "/")
    roles = endpoint_roles(source)
    return [
        VariantCaptures(
            variant,
            CaptureSource(source.bucket, folders[variant]),
            None if roles is None else roles.get(variant, RETIRED),
        )
        for variant in sorted(folders, key=_version_order)
    ]


def _version_order(variant: str) -> tuple[int, str]:
    """v9 before v10 (by version, not by name), unversioned names last."""
    version = version_of_variant(variant)
    return (int(version) if version != UNVERSIONED else 1 << 62, variant)


def endpoint_roles(source: CaptureSource) -> dict[str, str] | None:
    """Variant -> PRODUCTION or SHADOW on the endpoint whose captures these are (from the
    prefix data_capture/<endpoint>/ and DescribeEndpoint), or None when that cannot be
    known: a local folder, another prefix, or an endpoint that no longer exists."""
    parts = source.prefix.split("/")
    if source.bucket is None or len(parts) < 2 or parts[0] != CAPTURE_PREFIX or not parts[1]:
        return None
    sagemaker = boto3.client("sagemaker")
    try:
        described = sagemaker.describe_endpoint(EndpointName=parts[1])
    except ClientError as error:
        if error_code(error) in ("ValidationException",):
            return None  # SageMaker's answer for a missing endpoint
        raise
    roles = {str(v["VariantName"]): PRODUCTION for v in described.get("ProductionVariants", [])}
    for shadow in described.get("ShadowProductionVariants") or []:
        roles[str(shadow["VariantName"])] = SHADOW
    return roles


def model_for_variant(variant: str | None, group: str, captures_bucket: str | None) -> str:
    """s3://... of the model.tar.gz whose baseline judges `variant`'s records: the
    registered version it serves (v<N> -> version N of `group`), approved or not now.
    A variant that serves no registered version (an older deploy, named AllTraffic) is
    judged against the newest model.tar.gz in the captures' bucket, as before versions
    named variants; the caller says so."""
    version = version_of_variant(variant or "")
    if version != UNVERSIONED:
        try:
            served = registry.version(boto3.client("sagemaker"), group, int(version))
        except CommandError as error:
            raise BaselineError(f"variant {variant}: {error}") from None
        return served.model_data
    if captures_bucket is None:
        raise BaselineError(
            f"{variant or 'these captures'} name no model version: local captures need "
            "--model-dir or --model-data"
        )
    return f"s3://{captures_bucket}/{newest_model(captures_bucket)}"
