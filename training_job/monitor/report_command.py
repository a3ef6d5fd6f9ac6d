"""`monitor report`: every window of the captures judged, as an HTML page, plots and
summary.json, one per variant."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from contract.review_quality import VersionMeasures
from contract.s3 import S3_SCHEME, parse_s3_uri
from training_job.monitor.analysis import WindowAnalyzer
from training_job.monitor.captures import CaptureSource, ReadCounts, read_records
from training_job.monitor.detectors import MIN_SAMPLES
from training_job.monitor.drift_monitor import ANSWER_DRIFT, INPUT_DRIFT
from training_job.monitor.exits import EXIT_OK, EXIT_UNUSABLE, guarded
from training_job.monitor.gallery import baseline_photos
from training_job.monitor.judging import (
    chosen_variants,
    note_missing_statistics,
    reference_for,
    window_analyzer,
)
from training_job.monitor.plots import write_plots
from training_job.monitor.report_page import write_html, write_summary
from training_job.monitor.review import as_dict, review_measures
from training_job.monitor.variants import VariantCaptures
from training_job.monitor.verdict import verdict
from training_job.monitor.windows import Run, windows_by_count, windows_by_time


def _summary(
    args: argparse.Namespace,
    where: str,
    run: Run,
    analyzer: WindowAnalyzer,
    counts: ReadCounts,
    review: dict[str, VersionMeasures] | None = None,
) -> dict[str, Any]:
    return {
        "verdict": verdict(run.results, args.alpha, review),
        "review": as_dict(review) if review is not None else None,
        "captures": args.captures,
        "baseline": where,
        "alpha": args.alpha,
        "correction": "holm",
        "windows": len(run.results),
        "alerting_windows": sum(r.alert for r in run.results),
        "answer_drift_windows": sum(r.drift == ANSWER_DRIFT for r in run.results),
        "input_drift_windows": sum(r.drift == INPUT_DRIFT for r in run.results),
        "judged_windows": sum(bool(r.findings) for r in run.results),
        "records": counts.records,
        "damage": {**counts.as_dict(), **analyzer.counts.as_dict()},
        "latest_window": run.results[-1].as_dict() if run.results else None,
        "window_results": [r.as_dict() for r in run.results],
    }


def _report_variant(
    args: argparse.Namespace,
    captures: VariantCaptures,
    workdir: Path,
    out: Path,
    review: dict[str, VersionMeasures] | None,
) -> bool:
    """One variant's report in `out`, judged against its own baseline; whether any of
    its windows was judged."""
    baseline, net, config, where, familiarity = reference_for(args, workdir, captures)
    analyzer = window_analyzer(args, baseline, net, config, familiarity)
    counts = ReadCounts()
    records = read_records(captures.source, counts, args.since, args.until)
    if args.every:
        windows = windows_by_time(records, args.every, analyzer.counts)
    else:
        windows = windows_by_count(records, args.window or 200)
    note_missing_statistics(baseline, analyzer)
    run = Run()
    run.analyze_all(analyzer, windows)
    out.mkdir(parents=True, exist_ok=True)
    summary = _summary(args, where, run, analyzer, counts, review)
    summary["variant"] = captures.variant
    summary["role"] = captures.role
    plots = write_plots(run.results, analyzer, args.alpha, out)
    write_summary(summary, out / "summary.json")
    photos = (
        baseline_photos(_baseline_images(args), analyzer.imaging)
        if analyzer.galleries.kept
        else ([], "")
    )
    write_html(
        summary,
        plots,
        out / "report.html",
        analyzer.galleries.kept,
        photos,
        analyzer.galleries.dropped,
    )
    if captures.variant is not None:
        print(f"variant {captures.variant}" + (f" ({captures.role})" if captures.role else ""))
    print(
        f"{summary['windows']} windows: {summary['answer_drift_windows']} where the "
        f"model's answers moved, {summary['input_drift_windows']} with input drift only; "
        f"{counts.records} records; report: {out / 'report.html'}"
    )
    for sentence in summary["verdict"]:
        print(sentence)
    return bool(summary["judged_windows"])


def run_report(args: argparse.Namespace) -> int:
    def body(args: argparse.Namespace) -> int:
        source = CaptureSource.parse(args.captures)
        chosen = chosen_variants(args, source)
        review = (
            review_measures(args.decisions_table, args.since, args.until)
            if args.decisions_table
            else None
        )
        judged = False
        with tempfile.TemporaryDirectory(prefix="monitor-") as workdir:
            for captures in chosen:
                # One variant: the report in --out; several: one folder each.
                out = args.out if len(chosen) == 1 else args.out / captures.name
                judged |= _report_variant(args, captures, Path(workdir), out, review)
        if not judged:
            print(
                f"error: no window held {MIN_SAMPLES} usable records: nothing was judged",
                file=sys.stderr,
            )
            return EXIT_UNUSABLE
        return EXIT_OK

    return guarded(body, args)


def _baseline_images(args: argparse.Namespace) -> str | None:
    if args.baseline_images:
        return str(args.baseline_images)
    if args.captures.startswith(S3_SCHEME):
        return f"{S3_SCHEME}{parse_s3_uri(args.captures)[0]}/train/"
    return None
