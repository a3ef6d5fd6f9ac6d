"""`monitor check`: the latest window of each serving variant judged, for cron: the exit
code says what moved, and the verdict can go to CloudWatch."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3

from training_job.monitor.analysis import WindowResult
from training_job.monitor.captures import CaptureSource, ReadCounts, read_records
from training_job.monitor.detectors import MIN_SAMPLES
from training_job.monitor.drift_monitor import ANSWER_DRIFT, DETECTORS, INPUT_DRIFT, describe_drift
from training_job.monitor.exits import (
    EXIT_ANSWERS,
    EXIT_INPUT_DRIFT,
    EXIT_OK,
    EXIT_UNUSABLE,
    guarded,
)
from training_job.monitor.judging import (
    chosen_variants,
    note_missing_statistics,
    reference_for,
    window_analyzer,
)
from training_job.monitor.variants import SHADOW, VariantCaptures
from training_job.monitor.windows import last_records


def _publish(namespace: str, captures: str, judged: list[tuple[str, str, WindowResult]]) -> None:
    """The verdict as CloudWatch metrics: alarm on AnswerDrift to page, InputDrift to log.
    Under dimension Captures, production's (the worst of its variants, their usable
    records summed); under Captures and VariantName, each judged variant's."""
    # A dimension value is at most 1,024 ASCII characters.
    value = captures.encode("ascii", "replace").decode("ascii")[:1024]
    data: list[dict[str, Any]] = []
    production = [result for role, _, result in judged if role != SHADOW]
    for result in production:
        data += _verdict_data(result, [{"Name": "Captures", "Value": value}])
    by_name: dict[str, dict[str, Any]] = {}
    for datum in data:  # one datum per metric: the sum of usable records, the worst drift
        kept = by_name.setdefault(datum["MetricName"], datum)
        if kept is not datum:
            if datum["MetricName"] == "UsableRecords":
                kept["Value"] += datum["Value"]
            else:
                kept["Value"] = max(kept["Value"], datum["Value"])
    data = list(by_name.values())
    if len(judged) > 1 or any(role == SHADOW for role, _, _ in judged):
        for _, name, result in judged:
            variant = [
                {"Name": "Captures", "Value": value},
                {"Name": "VariantName", "Value": name},
            ]
            data += _verdict_data(result, variant)
    cloudwatch = boto3.client("cloudwatch")
    for start in range(0, len(data), 20):
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[start : start + 20])


def _verdict_data(result: WindowResult, dimensions: list[dict[str, str]]) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = [
        {"MetricName": "UsableRecords", "Value": float(result.used), "Unit": "Count"}
    ]
    if result.findings:
        # Each kind of drift from the registry's detectors of that kind (detectors.py).
        alerting = {f.detector for f in result.findings if f.alert}
        inputs = bool(alerting & DETECTORS.names(INPUT_DRIFT))
        answers = bool(alerting & DETECTORS.names(ANSWER_DRIFT))
        data += [
            {"MetricName": "InputDrift", "Value": float(inputs)},
            {"MetricName": "AnswerDrift", "Value": float(answers)},
        ]
    for datum in data:
        datum.setdefault("Unit", "None")
        datum["Dimensions"] = dimensions
    return data


# The exit status of a check over several variants: the most urgent of theirs.
_URGENCY = (EXIT_ANSWERS, EXIT_INPUT_DRIFT, EXIT_OK, EXIT_UNUSABLE)


def _check_variant(
    args: argparse.Namespace, captures: VariantCaptures, workdir: Path
) -> tuple[int, WindowResult]:
    """Judge the latest window of one variant's captures and print it; its exit status."""
    baseline, net, config, where, familiarity = reference_for(args, workdir, captures)
    analyzer = window_analyzer(args, baseline, net, config, familiarity)
    counts = ReadCounts()
    records, total = last_records(
        read_records(captures.source, counts, args.since, args.until), args.window
    )
    result = analyzer.analyze(0, records, total)
    damage = {
        k: v
        for k, v in {**counts.as_dict(), **analyzer.counts.as_dict()}.items()
        if v and k not in ("objects", "lines", "records")
    }
    if captures.variant is not None:
        role = f" ({captures.role})" if captures.role else ""
        print(f"variant: {captures.variant}{role}")
    print(f"baseline: {where}")
    note_missing_statistics(baseline, analyzer)
    print(
        f"window: last {result.records} records ({result.used} usable); damage: "
        + (", ".join(f"{k}={v}" for k, v in damage.items()) or "none")
    )
    if not result.findings:
        print(
            f"error: no verdict: {result.used} usable records of {result.records} read "
            f"(at least {MIN_SAMPLES} needed; records that are not images or come from "
            "another model are not usable)",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE, result
    print(f"{'detector':<10} {'test':<20} {'statistic':>10} {'adj. p':>9}  verdict")
    for f in result.findings:
        print(
            f"{f.detector:<10} {f.test:<20} {f.statistic:>10.4g} {f.p_adjusted:>9.3g}  "
            + ("ALERT" if f.alert else "ok")
        )
    if result.unfamiliar_rate is not None:
        print(
            f"unfamiliar share: {result.unfamiliar_rate:.1%} of the embedded sample "
            "(photos unlike the model's training photos; the model is calibrated to call "
            f"{1 - analyzer.familiarity.familiar_share:.0%} of ordinary photos so)"
        )
    if result.performance:
        print(
            "performance: "
            + ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in result.performance.items()
            )
        )
    print(f"verdict: {describe_drift(result.findings)}")
    return {ANSWER_DRIFT: EXIT_ANSWERS, INPUT_DRIFT: EXIT_INPUT_DRIFT}.get(
        result.drift, EXIT_OK
    ), result


def run_check(args: argparse.Namespace) -> int:
    def body(args: argparse.Namespace) -> int:
        source = CaptureSource.parse(args.captures)
        chosen = chosen_variants(args, source)
        if not chosen:
            print(
                "error: no verdict: no captures of the endpoint's variants now "
                "(--variant judges another)",
                file=sys.stderr,
            )
            return EXIT_UNUSABLE
        codes: list[int] = []
        judged: list[tuple[str, str, WindowResult]] = []
        with tempfile.TemporaryDirectory(prefix="monitor-") as workdir:
            for number, captures in enumerate(chosen):
                if number:
                    print()
                code, result = _check_variant(args, captures, Path(workdir))
                judged.append((captures.role or "", captures.name, result))
                if captures.role == SHADOW:
                    print(f"({captures.name} is a shadow: its verdict sets no exit status)")
                else:
                    codes.append(code)
        if args.metrics_namespace:
            _publish(args.metrics_namespace, args.captures, judged)
        if not codes:
            print("error: no verdict: only a shadow's captures were judged", file=sys.stderr)
            return EXIT_UNUSABLE
        # A variant without enough records does not hide another's verdict.
        return min(codes, key=_URGENCY.index)

    return guarded(body, args)
