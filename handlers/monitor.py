"""monitor: the scheduled drift check of the endpoint's captured traffic.

Each run reads the capture objects written since the last run and publishes to
CloudWatch: how many records it read and how many were damaged, the share below the
workflow's confidence threshold, the predicted class mix, and a confidence drift score:
the two-sample Kolmogorov-Smirnov distance between this period's top-class confidences
and the baseline's, divided by its critical value at alpha 0.01 (so the alarm threshold
is 1 whatever the sample sizes). Alarms on those metrics page the AlarmTopic. Pure
Python and boto3: each statistic is `contract.drift_statistics`', the definition
`training_job monitor`'s detectors test (with their p-values and the tests the Lambda
does not run).

Captures are kept per variant (`<CAPTURE_PREFIX><variant>/YYYY/MM/DD/HH/...`), and so is
the position: one StartAfter cursor per variant, in the state object. S3 lists keys in
UTF-8 binary order, so one cursor across variants went blind after a rollout: v10's
keys sort before v9's, and after a rollback to v1 every new key sorts before v2's
cursor. Each run lists the variant folders (Delimiter "/"), so a variant that appeared
since the last run is read from its first object. Which variants are shadows comes from
DescribeEndpoint (ShadowProductionVariants): the endpoint's metrics (dimension
EndpointName, what the alarms watch) count production variants only; every variant,
shadow or not, also gets its own metrics (dimensions EndpointName and VariantName). A
variant is counted by its role at the time of the run.

Capture lines are read and judged by `contract.capture`, the reader `training_job
monitor` uses too: damaged lines and objects are counted and skipped, with memory and
time per object bounded, and the position moves past every object a run read, damaged or
not (only an AWS error ends a run early, and then the next run reads the same objects).

The baseline document is read and checked by `contract.baseline`, as `training_job
monitor` reads it: a baseline one monitor refuses, the other refuses too.

Until the baseline exists (deploy publishes the deployed model's at
monitoring/<endpoint>/baseline.json), a run logs what it waits for and returns without
reading captures or publishing metrics: no error, no alarm.

Environment:
  CAPTURE_BUCKET, CAPTURE_PREFIX  where the endpoint's captures are (data_capture/<ep>/)
  BASELINE_KEY                    the deployed model's baseline.json (serverless.yml's
                                  default: monitoring/<endpoint>/baseline.json)
  ENDPOINT_NAME                   the metrics' EndpointName dimension
  THRESHOLD                       the threshold filter's own setting (serverless.yml passes
                                  both the same ${param:threshold}; default and rules:
                                  contract.threshold). LowConfidenceRate counts below it; a
                                  run whose baseline was profiled at another threshold
                                  says so in its log and summary.
  STATE_KEY                       the position object (default monitoring/<endpoint>.json):
                                  {"cursors": {"<variant>": "<last key read>"}}; an older
                                  {"last_key": KEY} is read as the cursor of KEY's variant
  METRIC_NAMESPACE                default SconesUnlimited/Monitoring
  SETTLE_SECONDS                  skip objects younger than this (default 120)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError

from contract.aws_errors import error_code
from contract.baseline import BaselineDocument, BaselineFormatError, loads
from contract.capture import (
    MAX_BASELINE_BYTES,
    MAX_OBJECT_BYTES,
    READ_CHUNK_BYTES,
    CaptureObjectError,
    damaged,
    read_object,
)
from contract.drift_statistics import below_threshold, class_mix_shift, drift_score, top_class
from contract.threshold import ThresholdError, threshold_from_environment
from handlers.errors import ConfigurationError
from handlers.json_log import log

DEFAULT_NAMESPACE = "SconesUnlimited/Monitoring"
# Objects younger than this may still be followed by objects with smaller keys (one per
# capture worker); waiting for them to settle keeps StartAfter from skipping any.
SETTLE_SECONDS = 120
MAX_OBJECTS_PER_RUN = 500
# No new object is started with less time left than this: one object (at most
# MAX_OBJECT_BYTES unpacked), the metrics and the position must still fit in the run.
RESERVED_MILLIS = 40_000
MIN_RECORDS_FOR_DRIFT = 20


@dataclass
class PeriodStats:
    objects: int = 0
    records: int = 0
    damaged: int = 0
    confidences: list[float] = field(default_factory=list)
    predicted: dict[str, int] = field(default_factory=dict)


def read_capture_object(
    s3: Any, bucket: str, key: str, size: int, stats: PeriodStats, baseline: BaselineDocument
) -> None:
    stats.objects += 1
    if size > MAX_OBJECT_BYTES:
        stats.damaged += 1
        log("WARNING", "capture object too large, skipped", key=key, size=size)
        return
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    counts: dict[str, int] = {}
    try:
        for _, values in read_object(body.iter_chunks(READ_CHUNK_BYTES), counts):
            if len(values) != len(baseline.classes):
                stats.damaged += 1  # another model version's answer
                continue
            stats.records += 1
            top = top_class(values)
            stats.confidences.append(values[top])
            name = baseline.classes[top]
            stats.predicted[name] = stats.predicted.get(name, 0) + 1
    except CaptureObjectError as error:
        stats.damaged += 1  # the object itself: gzip cut short, or unpacking too large
        log("WARNING", "capture object unreadable past this point", key=key, error=str(error))
    finally:
        body.close()
    stats.damaged += damaged(counts)
    if damaged(counts):
        log("WARNING", "damaged capture lines skipped", key=key, **counts)


def read_if_present(s3: Any, bucket: str, key: str, limit: int) -> bytes | None:
    """The object's bytes, or None when there is no such object.

    Existence is checked by listing the exact key, not by GetObject's NoSuchKey: S3 answers
    a GetObject of a missing key with 404 only to a caller allowed s3:ListBucket on the
    whole bucket; the role allows ListBucket only for some prefixes (an s3:prefix
    condition, which a GetObject request does not carry), so there it would be a 403
    AccessDenied, the same as a real permission error."""
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    contents = listing.get("Contents", [])
    if not contents or contents[0]["Key"] != key:  # the exact key sorts first if it exists
        return None
    if contents[0]["Size"] > limit:
        raise ConfigurationError(f"s3://{bucket}/{key} is over {limit} bytes")
    body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def _environment(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default or "").strip()
    if not value:
        raise ConfigurationError(f"{name} is not set")
    return value


def metrics(
    stats: PeriodStats,
    baseline: BaselineDocument,
    endpoint: str,
    threshold: float,
    variant: str | None = None,
) -> list[dict[str, Any]]:
    """The run's metrics; LowConfidenceRate is the share below the filter's `threshold`.
    With `variant`, one variant's, under the dimensions EndpointName and VariantName."""
    dimensions = [{"Name": "EndpointName", "Value": endpoint}]
    if variant is not None:
        dimensions.append({"Name": "VariantName", "Value": variant})
    data = [
        {"MetricName": "CapturedRecords", "Value": stats.records, "Unit": "Count"},
        {"MetricName": "DamagedRecords", "Value": stats.damaged, "Unit": "Count"},
    ]
    if stats.records:
        low = below_threshold(stats.confidences, threshold) / stats.records
        data.append({"MetricName": "LowConfidenceRate", "Value": low, "Unit": "None"})
        shares = {c: stats.predicted.get(c, 0) / stats.records for c in baseline.classes}
        data.append(
            {
                "MetricName": "ClassMixShift",  # total variation distance from the baseline mix
                "Value": class_mix_shift(shares, baseline.class_share),
                "Unit": "None",
            }
        )
        for name, share in shares.items():
            data.append(
                {
                    "MetricName": "ClassShare",
                    "Value": share,
                    "Unit": "None",
                    "Dimensions": [*dimensions, {"Name": "Class", "Value": name}],
                }
            )
    if stats.records >= MIN_RECORDS_FOR_DRIFT:
        data.append(
            {
                "MetricName": "ConfidenceDrift",
                "Value": drift_score(sorted(baseline.confidences), stats.confidences),
                "Unit": "None",
            }
        )
    for datum in data:
        datum.setdefault("Dimensions", dimensions)
    return data


def merged(parts: list[PeriodStats]) -> PeriodStats:
    """One period's statistics over several variants' (the endpoint's production traffic)."""
    total = PeriodStats()
    for part in parts:
        total.objects += part.objects
        total.records += part.records
        total.damaged += part.damaged
        total.confidences.extend(part.confidences)
        for name, count in part.predicted.items():
            total.predicted[name] = total.predicted.get(name, 0) + count
    return total


def read_cursors(state: bytes | None, prefix: str, context: object) -> dict[str, str]:
    """Variant -> the last key read in it, from the state object. The older one-cursor
    state ({"last_key": KEY}) becomes the cursor of KEY's variant; the others start from
    their first object: those sorting after KEY were never read, and those sorting before
    it (read until the cursor passed them) are read again once, rather than risk one
    object never read."""
    if not state:
        return {}
    try:
        document = json.loads(state)
        if "cursors" in document:
            cursors = document["cursors"]
            if not isinstance(cursors, dict):
                raise ValueError("cursors is not an object")
            return {str(variant): str(key) for variant, key in cursors.items() if key}
        last_key = str(document.get("last_key") or "")
    except (ValueError, AttributeError, TypeError, RecursionError):
        log("WARNING", "state object unreadable, starting over", context)
        return {}
    variant = last_key[len(prefix) :].split("/", 1)[0] if last_key.startswith(prefix) else ""
    return {variant: last_key} if variant else {}


def capture_variants(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The variant folders under the capture prefix: every variant that ever captured."""
    found: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter="/"
    ):
        found += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
    return sorted(found)


def shadow_variants(endpoint: str, context: object) -> set[str]:
    """The endpoint's shadow variants now (DescribeEndpoint). An endpoint that no longer
    exists has none: its captures are still read, all as production."""
    sagemaker = boto3.client("sagemaker")
    try:
        described = sagemaker.describe_endpoint(EndpointName=endpoint)
    except ClientError as error:
        # SageMaker answers a missing endpoint with ValidationException "Could not find
        # endpoint"; AccessDenied and the rest are real errors.
        if error_code(error) not in ("ValidationException",):
            raise
        log("INFO", "no such endpoint: every variant counted as production", context)
        return set()
    return {str(v["VariantName"]) for v in described.get("ShadowProductionVariants") or []}


class CaptureRun:
    """One run's reading: each variant from its cursor, within the run's object and time
    budget, skipping objects too young to have settled."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        baseline: BaselineDocument,
        settled_before: float,
        context: object,
    ) -> None:
        self.s3, self.bucket, self.baseline = s3, bucket, baseline
        self.settled_before = settled_before
        self.remaining = getattr(context, "get_remaining_time_in_millis", None)
        self.stats: dict[str, PeriodStats] = {}
        self.objects = 0
        self.moved = False
        self.out_of_budget = False

    def _budget_left(self) -> bool:
        self.out_of_budget = self.objects >= MAX_OBJECTS_PER_RUN or (
            self.remaining is not None and self.remaining() < RESERVED_MILLIS
        )
        return not self.out_of_budget

    def read_variant(self, variant_prefix: str, cursor: str) -> str:
        """Read the variant's objects after `cursor`; the last key read (or `cursor`)."""
        variant = variant_prefix.rstrip("/").rsplit("/", 1)[-1]
        listing: dict[str, Any] = {"Bucket": self.bucket, "Prefix": variant_prefix}
        if cursor:
            listing["StartAfter"] = cursor
        for page in self.s3.get_paginator("list_objects_v2").paginate(**listing):
            for item in page.get("Contents", []):
                # Keys are time ordered within a variant: the first unsettled one ends it.
                if item["LastModified"].timestamp() > self.settled_before:
                    return cursor
                if not self._budget_left():
                    return cursor
                stats = self.stats.setdefault(variant, PeriodStats())
                read_capture_object(
                    self.s3, self.bucket, item["Key"], item["Size"], stats, self.baseline
                )
                self.objects += 1
                cursor = item["Key"]
                self.moved = True
        return cursor


def handler(event: object, context: object = None) -> dict[str, Any]:
    bucket = _environment("CAPTURE_BUCKET")
    prefix = _environment("CAPTURE_PREFIX")
    endpoint = _environment("ENDPOINT_NAME")
    baseline_key = _environment("BASELINE_KEY")
    state_key = _environment("STATE_KEY", f"monitoring/{endpoint}.json")
    namespace = _environment("METRIC_NAMESPACE", DEFAULT_NAMESPACE)
    try:
        threshold = threshold_from_environment(os.environ)
    except ThresholdError as error:
        raise ConfigurationError(str(error)) from None
    if not prefix.endswith("/"):
        raise ConfigurationError(f"CAPTURE_PREFIX must end with '/', got {prefix[:100]!r}")
    s3 = boto3.client("s3")
    document = read_if_present(s3, bucket, baseline_key, MAX_BASELINE_BYTES)
    if document is None:
        # Normal before the first deploy that publishes a baseline: wait, do not alarm.
        log(
            "INFO",
            "waiting for a baseline: captures stay unread until it exists",
            context,
            baseline=f"s3://{bucket}/{baseline_key}",
            publish_with="python -m training_job deploy (publishes the deployed model's) "
            "or --param baselineKey=models/<job>/output/baseline.json after monitor baseline",
        )
        return {"waiting_for": f"s3://{bucket}/{baseline_key}", "objects": 0, "records": 0}
    try:
        # The same reading of the document as `training_job monitor`'s.
        baseline = loads(document, f"BASELINE_KEY s3://{bucket}/{baseline_key}")
    except BaselineFormatError as error:
        raise ConfigurationError(str(error)) from None
    if baseline.threshold != threshold:
        # Not an error: the metrics use the filter's threshold. But the baseline's
        # share below it (what the alarm level was chosen from) was profiled at another.
        log(
            "WARNING",
            "the baseline was profiled at another confidence threshold than the filter's",
            context,
            threshold=threshold,
            baseline_threshold=baseline.threshold,
        )
    cursors = read_cursors(
        read_if_present(s3, bucket, state_key, MAX_BASELINE_BYTES), prefix, context
    )
    settle = _environment("SETTLE_SECONDS", str(SETTLE_SECONDS))
    if not settle.isdigit():
        raise ConfigurationError(f"SETTLE_SECONDS must be a whole number, got {settle[:20]!r}")
    shadows = shadow_variants(endpoint, context)
    run = CaptureRun(s3, bucket, baseline, time.time() - int(settle), context)
    for variant in capture_variants(s3, bucket, prefix):
        cursor = run.read_variant(f"{prefix}{variant}/", cursors.get(variant, ""))
        if cursor:
            cursors[variant] = cursor
        if run.out_of_budget:
            break

    production = [s for v, s in run.stats.items() if v not in shadows]
    stats = merged(production)
    data = metrics(stats, baseline, endpoint, threshold)
    for variant, variant_stats in sorted(run.stats.items()):
        data += metrics(variant_stats, baseline, endpoint, threshold, variant)
    cloudwatch = boto3.client("cloudwatch")
    for start in range(0, len(data), 20):  # PutMetricData's limit per call is modest; stay under it
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[start : start + 20])
    # Only after the metrics are out: a failed run re-reads its objects next time.
    if run.moved:
        s3.put_object(
            Bucket=bucket,
            Key=state_key,
            ContentType="application/json",
            Body=json.dumps({"cursors": cursors}, sort_keys=True).encode(),
        )
    summary = {
        "objects": stats.objects,
        "records": stats.records,
        "damaged": stats.damaged,
        "variants": {
            variant: {
                "role": "shadow" if variant in shadows else "production",
                "objects": s.objects,
                "records": s.records,
                "damaged": s.damaged,
            }
            for variant, s in sorted(run.stats.items())
        },
        "cursors": cursors,
        "threshold": threshold,
        "baseline_threshold": baseline.threshold,
        "metrics": {
            d["MetricName"]: d["Value"]
            for d in data
            if d["MetricName"] != "ClassShare" and len(d["Dimensions"]) == 1
        },
    }
    log("INFO", "published monitoring metrics", context, **summary)
    return summary
