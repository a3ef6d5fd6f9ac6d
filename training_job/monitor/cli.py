"""`python -m training_job monitor baseline | report | check | review`."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import boto3
import torch
from botocore.exceptions import BotoCoreError, ClientError

from contract.review_quality import ALL_VERSIONS, MIN_AUDIT_SAMPLE, VersionMeasures
from contract.s3 import (
    S3_SCHEME,
    S3UriError,
    normalise_prefix,
    parse_s3_object_uri,
    parse_s3_prefix_uri,
    parse_s3_uri,
)
from training_job import model_code
from training_job.arguments import bounded
from training_job.data.bucket import BucketError, require_region
from training_job.models import registry
from training_job.monitor import versions
from training_job.monitor.baseline import (
    Baseline,
    BaselineError,
    ensure_baseline,
    fetch_model,
    load_baseline,
    newest_model,
)
from training_job.monitor.captures import (
    CaptureSource,
    CaptureSourceError,
    ReadCounts,
    parse_time,
    read_labels,
    read_records,
)
from training_job.monitor.detectors import (
    ANSWER_DETECTORS,
    ANSWER_DRIFT,
    INPUT_DETECTORS,
    INPUT_DRIFT,
    MIN_SAMPLES,
    DriftMonitor,
    describe_drift,
)
from training_job.monitor.embedding import Embedder
from training_job.monitor.gallery import baseline_photos
from training_job.monitor.report import (
    MAX_WINDOW_RECORDS,
    Run,
    WindowAnalyzer,
    WindowResult,
    last_records,
    verdict,
    windows_by_count,
    windows_by_time,
    write_html,
    write_plots,
    write_summary,
)
from training_job.monitor.review import as_dict, review_measures, summary_lines
from training_job.monitor.variants import (
    PRODUCTION,
    SHADOW,
    VariantCaptures,
    model_for_variant,
    split_by_variant,
)

# One code per outcome, so a cron job can page on answers, log input drift, and never
# mistake a broken run for either. SIGTERM exits 143 and Ctrl-C 130, as shells do.
EXIT_OK = 0  # judged: no drift
EXIT_ANSWERS = 1  # judged: the model's answers moved (page)
EXIT_UNUSABLE = 2  # no verdict: no usable records, no baseline, bad arguments, AWS refused
EXIT_INPUT_DRIFT = 3  # judged: input drift, model answers unchanged (log)
EXIT_INTERNAL = 4  # no verdict: a bug (the traceback is printed)
EXIT_CODES_HELP = (
    "Exit status: 0 no drift; 1 the model's answers moved (class mix, confidence or "
    "doubtful share: page someone); 3 input drift with the model's answers unchanged (log "
    "it); 2 no verdict: unusable input (no captures, no record usable: not images or from "
    "another model, fewer than 20 usable; no baseline; bad arguments; AWS errors); 4 "
    "internal error (a bug: traceback on stderr); 130 interrupted, 143 terminated (SIGTERM; "
    "temporary files removed)."
)
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 1h or 1d, got {text!r}")
    return float(int(match.group(1)) * _SECONDS[match.group(2)])


def timestamp(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected ISO-8601 time, got {text!r}") from error


def prefix_argument(text: str) -> str:
    try:
        return normalise_prefix(text)
    except S3UriError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


window_size = bounded(int, f"a window of 1 to {MAX_WINDOW_RECORDS} records", 1, MAX_WINDOW_RECORDS)

positive = bounded(int, "a whole number of at least 1", 1)

probability = bounded(float, "a number between 0 and 1", 0, 1, above=True, below=True)


def metric_namespace(text: str) -> str:
    """What PutMetricData accepts: 1-255 ASCII characters, not starting with ':' or the
    'AWS/' that AWS keeps for its own services."""
    if not 1 <= len(text) <= 255 or not text.isascii() or not text.isprintable():
        raise argparse.ArgumentTypeError("a namespace is 1 to 255 printable ASCII characters")
    if text.startswith((":", "AWS/")):
        raise argparse.ArgumentTypeError("a namespace cannot start with ':' or 'AWS/'")
    return text


_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_TABLE_ARN = re.compile(r"^arn:aws[a-z-]*:dynamodb:[a-z0-9-]+:\d{12}:table/[A-Za-z0-9_.-]{3,255}$")


def table_name(text: str) -> str:
    """A DynamoDB table's name (3-255 of A-Z a-z 0-9 _ . -) or its ARN."""
    if not (_TABLE_NAME.match(text) or _TABLE_ARN.match(text)):
        raise argparse.ArgumentTypeError(
            f"expected a DynamoDB table name (3-255 letters, digits, _ . -) or ARN, got "
            f"{text[:80]!r}"
        )
    return text


def _add_source_options(parser: argparse.ArgumentParser, default_window: int | None) -> None:
    parser.add_argument(
        "--captures",
        required=True,
        metavar="URL",
        help="capture prefix: s3://BUCKET/data_capture/<endpoint>/ (or a local folder of "
        "capture .jsonl / .jsonl.gz files); each variant's folder (<variant>/YYYY/MM/DD/HH/) "
        "is read and judged apart, in key (time) order, against the baseline of the model "
        "version that answered it",
    )
    parser.add_argument(
        "--variant",
        action="append",
        metavar="NAME",
        help="judge only this variant (repeatable; default: the endpoint's production and "
        "shadow variants now, or every variant when the endpoint is unknown). A shadow's "
        "verdict is shown apart and never sets the exit status",
    )
    parser.add_argument(
        "--since",
        type=timestamp,
        metavar="TIME",
        help="skip records captured before this ISO-8601 time (UTC if no zone)",
    )
    parser.add_argument(
        "--until",
        type=timestamp,
        metavar="TIME",
        help="skip records captured at or after this ISO-8601 time",
    )
    reference = parser.add_mutually_exclusive_group()
    reference.add_argument(
        "--model-data",
        metavar="S3_URL",
        help="the model artifact s3://.../model.tar.gz whose baseline to compare every "
        "variant against (default: each variant's own: variant v<N> serves version N of "
        "--model-group, approved or not; a variant named otherwise, the newest "
        "models/*/output/model.tar.gz in the captures' bucket)",
    )
    reference.add_argument(
        "--model-dir",
        type=Path,
        metavar="DIR",
        help="an unpacked model directory holding model.pth, model.json, baseline.json "
        "and baseline_embeddings.npy, instead of a model in S3",
    )
    registry.add_group_option(parser)
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="FILE",
        help="ground truth that arrived later, joined on inferenceId or "
        "eventId: CSV (inferenceId|eventId,label) or SageMaker ground-truth "
        "JSON lines; adds accuracy, precision and recall per window",
    )
    parser.add_argument(
        "--alpha",
        type=probability,
        default=0.01,
        help="family-wise false-alarm rate per window, Holm-corrected over "
        "all tests (default: %(default)s)",
    )
    parser.add_argument(
        "--permutations",
        type=positive,
        default=10000,
        help="most permutations for the embedding MMD test's p-value; a window far from an "
        "alert stops after its 20th exceedance (Besag-Clifford), so only drifting windows "
        "cost this many. Enough that the p-value can pass Holm's alpha/16 (16 tests) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--embedding-sample",
        type=window_size,
        default=96,
        help="embed at most this many images per window, drawn at random, for the MMD test "
        "against the baseline's embeddings: the model pass is the report's slowest step "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--embedding-members",
        type=positive,
        default=1,
        metavar="N",
        help="embed with the first N members of the model's ensemble (each is a complete "
        "classifier, and each costs as much CPU as the first; N beyond the ensemble's size "
        "uses them all) (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=positive,
        default=1,
        metavar="N",
        help="torch threads for the model pass. One is the fastest on a busy 2-core machine: "
        "two threads each waited on the other, using 3 times the CPU per image "
        "(default: %(default)s)",
    )
    if default_window is not None:
        parser.add_argument(
            "--metrics-namespace",
            type=metric_namespace,
            metavar="NAMESPACE",
            help="also publish the verdict to CloudWatch in this namespace, dimension "
            "Captures=<the --captures URL>: InputDrift (1 when an input or embedding test "
            "alerted), AnswerDrift (1 when the model's answers moved) and UsableRecords; "
            "alarm on AnswerDrift to page, on InputDrift to log (default: publish nothing)",
        )
        parser.add_argument(
            "--window",
            type=window_size,
            default=default_window,
            help="judge the last N usable records (default: %(default)s)",
        )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "monitor",
        help="watch captured endpoint traffic for drift and degraded performance",
        description="Compare the endpoint's captured traffic with the baseline profile "
        "written beside the model (input statistics, embeddings, class mix, confidence).",
    )
    commands = parser.add_subparsers(dest="monitor_command", required=True, metavar="SUBCOMMAND")

    baseline = commands.add_parser(
        "baseline",
        help="publish (or rebuild) the baseline beside a model artifact in S3",
        description="Copy the baseline packaged in model.tar.gz beside it in S3 "
        "(models/<job>/output/baseline.json + baseline_embeddings.npy), where the scheduled "
        "monitor reads it. A model trained without one gets one rebuilt from staged images, "
        "as training writes it: the model's answers from its validation split (the staged "
        "train split cut by train.py's seeded rule, with the seed and fraction recorded in "
        "the model's metrics.json), the input statistics from the whole train split.",
    )
    where = baseline.add_mutually_exclusive_group(required=True)
    where.add_argument("--model-data", metavar="S3_URL", help="s3://.../model.tar.gz")
    where.add_argument("--bucket", help="use the newest models/*/output/model.tar.gz here")
    baseline.add_argument(
        "--data-prefix",
        default="",
        type=prefix_argument,
        metavar="PREFIX",
        help="where the staged splits live in the model's bucket: PREFIXtrain.lst, "
        "PREFIXtrain/, PREFIXtest/ (default: the bucket's root)",
    )
    baseline.add_argument(
        "--images",
        metavar="S3_URL",
        help="profile these staged images instead of the train split (default: the train "
        "split, its validation part reproduced from the model's metrics.json with train.py's "
        "seeded split; the staged test split when metrics.json does not say)",
    )
    baseline.add_argument(
        "--rebuild", action="store_true", help="rebuild even when the model packages a baseline"
    )
    baseline.set_defaults(func=run_baseline)

    report = commands.add_parser(
        "report",
        help="windows of captured traffic -> report.html, plots (PNG) and summary.json",
        description="Stream every capture record (constant memory), cut it into windows, "
        "run every detector on each and write report.html (self-contained, opens offline: "
        "the verdict in plain sentences first, people's answers per model version with "
        "--decisions-table, each alerting window's most unusual and doubtful photos beside "
        "baseline photos, the plots over capture time), the plots and summary.json; each "
        "window's verdict says whether the model's answers moved or only its inputs. "
        "Damaged records are counted and reported, never fatal. Exit status: 0 "
        "report written; 2 no usable record (the report is still written), no baseline, bad "
        "arguments or AWS errors; 4 internal error; 143 terminated (SIGTERM).",
    )
    _add_source_options(report, default_window=None)
    size = report.add_mutually_exclusive_group()
    size.add_argument(
        "--window",
        type=window_size,
        default=None,
        help="windows of N consecutive records (default: 200)",
    )
    size.add_argument(
        "--every",
        type=duration,
        metavar="DURATION",
        help="windows by capture time instead, e.g. 1h, 30m, 1d",
    )
    report.add_argument(
        "--baseline-images",
        metavar="URL",
        help="where to sample the baseline photos shown beside each alerting window's: the "
        "staged split the baseline was profiled from, s3://BUCKET/PREFIX or a local folder "
        "(default: s3://<the captures' bucket>/train/)",
    )
    report.add_argument(
        "--decisions-table",
        type=table_name,
        metavar="TABLE",
        help="also read people's answers from the decisions table (as `monitor review` "
        "does, for --since/--until) and show accuracy past the gate, the doubtful share and "
        "the model-person agreement per model version",
    )
    report.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder for report.html, *.png and summary.json (created)",
    )
    report.set_defaults(func=run_report)

    check = commands.add_parser(
        "check",
        help="verdicts for the latest window; exit 1 if the model's answers moved, 3 if "
        "only its inputs did (for cron and CI)",
        description="Judge the latest window of captured traffic and say what kind of drift "
        "it is: none, input drift with the model's answers unchanged, or the model's answers "
        "moved. " + EXIT_CODES_HELP,
    )
    _add_source_options(check, default_window=200)
    check.set_defaults(func=run_check)
    _register_review(commands)
    versions.add_parser(commands)  # compare two variants (training_job/monitor/versions.py)


def _register_review(commands: Any) -> None:
    review = commands.add_parser(
        "review",
        help="accuracy past the gate (from the audit sample), doubtful share and "
        "model-person agreement, per model version, from people's answers",
        description="Measure the model from the answers people gave in the review queue "
        "(the decisions table): accuracy past the gate from the audited photos (an unbiased "
        "sample of the photos that passed), with its Wilson 95%% interval and sample size; "
        "the doubtful share; the agreement between the model and the person on doubtful "
        "photos; per model version. A 'neither' answer counts as the model being wrong, and "
        "is also counted apart. Exit status: 0 measured (and, with --alarm-below, no "
        "version below the level); 1 a version's accuracy past the gate is below "
        "--alarm-below (page); 2 no verdict: with --alarm-below, no version has "
        "--min-sample audited answers; bad arguments; AWS errors; 4 internal error.",
    )
    review.add_argument(
        "--table",
        required=True,
        type=table_name,
        help="the decisions table (serverless.yml's DecisionsTable, the handlers' "
        "DECISIONS_TABLE), read with a paginated Scan",
    )
    review.add_argument(
        "--since", type=timestamp, metavar="TIME", help="decisions made at or after this time"
    )
    review.add_argument(
        "--until", type=timestamp, metavar="TIME", help="decisions made before this time"
    )
    review.add_argument(
        "--alarm-below",
        type=probability,
        metavar="LEVEL",
        help="exit 1 when a model version's accuracy past the gate is below LEVEL (e.g. "
        "0.95, serverless.yml's accuracyAlarm)",
    )
    review.add_argument(
        "--min-sample",
        type=positive,
        default=MIN_AUDIT_SAMPLE,
        metavar="N",
        help="--alarm-below judges only versions with at least N audited answers "
        "(default: %(default)s, the scheduled monitor's)",
    )
    review.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the measures as JSON to FILE"
    )
    review.set_defaults(func=run_review)


def _reference(
    args: argparse.Namespace, workdir: Path, captures: VariantCaptures
) -> tuple[Baseline, Any, Any, str, Any]:
    """The baseline `captures` are judged against (the answering version's, unless
    --model-dir or --model-data names one), the model that embeds captured images, a
    description of both, and the model's familiarity check (None for a version without)."""
    if args.model_dir is not None:
        model_dir = args.model_dir
        baseline = Baseline.from_dir(model_dir)
        where = str(model_dir)
    else:
        model_data = args.model_data or model_for_variant(
            captures.variant, args.model_group, captures.source.bucket
        )
        bucket, key = parse_s3_object_uri(model_data)
        into = workdir / captures.name  # a VariantName: letters, digits, hyphens
        into.mkdir()
        model_dir = fetch_model(bucket, key, into)
        baseline = load_baseline(bucket, key, model_dir)
        where = f"s3://{bucket}/{key}"
    try:
        net, config = model_code.model().load_model(model_dir)
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise BaselineError(f"{where}: cannot load the model ({error})") from error
    if list(config.classes) != baseline.classes:
        raise BaselineError(f"{where}: the baseline's classes differ from the model's")
    # The unfamiliar share needs the version's own familiarity statistics (issue 23).
    return baseline, net, config, where, model_code.familiarity().load(model_dir)


def _chosen(args: argparse.Namespace, source: CaptureSource) -> list[VariantCaptures]:
    """The captures to judge, one entry per variant: --variant's, or those serving now."""
    found = split_by_variant(source) or [VariantCaptures(None, source, None)]
    if args.variant:
        named = [c for c in found if c.variant in args.variant]
        missing = sorted(set(args.variant) - {c.variant for c in named})
        if missing:
            there = ", ".join(c.name for c in found)
            raise CaptureSourceError(
                f"no captures of variant {', '.join(missing)} under {args.captures} "
                f"(variants there: {there})"
            )
        return named
    serving = [c for c in found if c.role in (None, PRODUCTION, SHADOW)]
    for retired in (c for c in found if c not in serving):
        print(
            f"note: variant {retired.name} is not on the endpoint now: not judged "
            "(--variant names it)"
        )
    return serving


def _analyzer(
    args: argparse.Namespace, baseline: Baseline, net: Any, config: dict, familiarity: Any
) -> WindowAnalyzer:
    labels = read_labels(args.labels) if args.labels else None
    torch.set_num_threads(args.threads)
    embedder = Embedder(net, config, args.embedding_members)
    monitor = DriftMonitor(
        alpha=args.alpha,
        permutations=args.permutations,
        embedding_dimensions=embedder.dimensions,
    ).fit(baseline)
    return WindowAnalyzer(
        baseline,
        embedder,
        monitor,
        args.embedding_sample,
        labels,
        familiarity=familiarity,
    )


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


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM (cron's timeout, `kill`, a stopping container) raised as SystemExit, so every
    `with` block unwinds: the temporary folder holding the extracted model is removed
    instead of left in /tmp. Only the main thread can install a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def require_buckets_in_region(args: argparse.Namespace) -> None:
    """The region rule `--region` states (the bucket must be in it), for every bucket the
    command reads, before it reads any: a missing one is named, and one elsewhere is
    refused instead of judged from there."""
    named = {args.bucket} if getattr(args, "bucket", None) else set()
    for option in ("captures", "model_data", "images"):
        value = getattr(args, option, None)
        if isinstance(value, str) and value.startswith("s3://"):
            named.add(value.removeprefix("s3://").split("/", 1)[0])
    s3 = boto3.client("s3")
    for bucket in sorted(named):
        require_region(s3, bucket)


def _guarded(body: Any, args: argparse.Namespace) -> int:
    with _sigterm_as_exit():
        try:
            require_buckets_in_region(args)
            return int(body(args))
        except (BaselineError, BucketError, CaptureSourceError, ValueError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_UNUSABLE
        except (ClientError, BotoCoreError) as error:
            print(f"error: AWS: {error}", file=sys.stderr)
            return EXIT_UNUSABLE
        except Exception:  # a bug: say so, and never exit with an alert's code
            traceback.print_exc()
            print("error: internal error (the traceback above is a bug)", file=sys.stderr)
            return EXIT_INTERNAL


def run_baseline(args: argparse.Namespace) -> int:
    def body(args: argparse.Namespace) -> int:
        if args.model_data:
            bucket, key = parse_s3_object_uri(args.model_data)
        else:
            bucket, key = args.bucket, newest_model(args.bucket)
        images_prefix = None
        if args.images:
            images_bucket, images_prefix = parse_s3_prefix_uri(args.images)
            if images_bucket != bucket:
                raise ValueError("--images must be in the model's bucket")
        written, origin = ensure_baseline(
            bucket, key, args.data_prefix, images_prefix, args.rebuild
        )
        print(f"baseline {origin}: " + ", ".join(written))
        return EXIT_OK

    return _guarded(body, args)


def _report_variant(
    args: argparse.Namespace,
    captures: VariantCaptures,
    workdir: Path,
    out: Path,
    review: dict[str, VersionMeasures] | None,
) -> bool:
    """One variant's report in `out`, judged against its own baseline; whether any of
    its windows was judged."""
    baseline, net, config, where, familiarity = _reference(args, workdir, captures)
    analyzer = _analyzer(args, baseline, net, config, familiarity)
    counts = ReadCounts()
    records = read_records(captures.source, counts, args.since, args.until)
    if args.every:
        windows = windows_by_time(records, args.every, analyzer.counts)
    else:
        windows = windows_by_count(records, args.window or 200)
    _note_missing_statistics(baseline, analyzer)
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
        chosen = _chosen(args, source)
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

    return _guarded(body, args)


def _baseline_images(args: argparse.Namespace) -> str | None:
    if args.baseline_images:
        return str(args.baseline_images)
    if args.captures.startswith(S3_SCHEME):
        return f"{S3_SCHEME}{parse_s3_uri(args.captures)[0]}/train/"
    return None


def _note_missing_statistics(baseline: Baseline, analyzer: WindowAnalyzer) -> None:
    """A baseline written before the colour moments existed is still used, without them."""
    missing = [name for name in analyzer.profile.STATISTICS if name not in baseline.statistics]
    if missing:
        print(
            f"note: the baseline has no {', '.join(missing)} (written by an older version, "
            "so those are not tested): `monitor baseline --rebuild` adds them"
        )


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
        alerting = {f.detector for f in result.findings if f.alert}
        data += [
            {"MetricName": "InputDrift", "Value": float(bool(alerting & INPUT_DETECTORS))},
            {"MetricName": "AnswerDrift", "Value": float(bool(alerting & ANSWER_DETECTORS))},
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
    baseline, net, config, where, familiarity = _reference(args, workdir, captures)
    analyzer = _analyzer(args, baseline, net, config, familiarity)
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
    _note_missing_statistics(baseline, analyzer)
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
        chosen = _chosen(args, source)
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

    return _guarded(body, args)


def run_review(args: argparse.Namespace) -> int:
    def body(args: argparse.Namespace) -> int:
        measured = review_measures(args.table, args.since, args.until)
        for line in summary_lines(measured):
            print(line)
        if args.json:
            write_summary(as_dict(measured), args.json)
        if args.alarm_below is None:
            return EXIT_OK
        judged = {
            version: m.accuracy_past_gate
            for version, m in measured.items()
            if version != ALL_VERSIONS and m.accuracy_past_gate.n >= args.min_sample
        }
        if not judged:
            print(
                f"error: no verdict: no model version has {args.min_sample} audited answers "
                "(--min-sample)",
                file=sys.stderr,
            )
            return EXIT_UNUSABLE
        below = [v for v, accuracy in judged.items() if (accuracy.value or 0.0) < args.alarm_below]
        for version in below:
            print(
                f"ALERT: model version {version}: accuracy past the gate "
                f"{judged[version].value:.1%} is below {args.alarm_below:.1%}"
            )
        return EXIT_ANSWERS if below else EXIT_OK

    return _guarded(body, args)
