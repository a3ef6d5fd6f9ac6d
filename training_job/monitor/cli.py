"""`python -m training_job monitor baseline | report | check | review | versions`: the
parsers and their options; each subcommand runs in its own module (baseline_command,
report_command, check_command, review_command; versions in versions.py)."""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from contract.review_quality import MIN_AUDIT_SAMPLE
from contract.s3 import S3UriError, normalise_prefix
from training_job.arguments import bounded
from training_job.models import registry
from training_job.monitor import versions
from training_job.monitor.baseline_command import run_baseline
from training_job.monitor.captures import parse_time
from training_job.monitor.check_command import run_check
from training_job.monitor.exits import EXIT_CODES_HELP
from training_job.monitor.report_command import run_report
from training_job.monitor.review_command import run_review
from training_job.monitor.windows import MAX_WINDOW_RECORDS

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
