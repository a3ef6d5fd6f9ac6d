"""Two model versions on one endpoint, compared from their captured answers.

During a rollout's shadow stage the new version (the shadow variant) answers a copy of
each request the serving version (the production variant) answers; data capture writes
both under `data_capture/<endpoint>/<variant>/`. The two records of one request are
paired by the caller's inferenceId (InvokeEndpoint's InferenceId), or by eventId (the
local endpoint gives both the same one). This compares, per variant: how many answers,
mean confidence, doubtful share (best probability below the workflow's threshold); and
between them: agreement (the share of paired requests on which both name the same
class) and how much the shadow answered of what production answered (a version that
errors answers less: errors are not captured). Without enough pairs, agreement is
bounded by the class mixes: 1 minus their total variation distance. A canary (two
production variants) is compared the same way, without pairs.

`python -m training_job monitor versions` prints it; `training_job rollout` gates its
canary on it.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from contract.threshold import ThresholdError, threshold_from_environment
from training_job.arguments import bounded
from training_job.data.bucket import BucketError, require_region
from training_job.errors import UsageError
from training_job.monitor.captures import CaptureSource, ReadCounts, read_records
from training_job.serving.capture import CAPTURE_PREFIX

CAPTURE_SETTLE_SECONDS = 5.0  # the local endpoint ships captures every 2 s
MIN_ANSWERED_SHARE = 0.9  # a shadow answering less than this share of requests is failing


@dataclass(frozen=True)
class VariantAnswers:
    variant: str
    answers: int
    mean_confidence: float
    doubtful_share: float
    classes: dict[int, int]

    def line(self) -> str:
        return (
            f"{self.variant}: {self.answers} answers, mean confidence "
            f"{self.mean_confidence:.3f}, doubtful share {self.doubtful_share:.3f}"
        )


@dataclass(frozen=True)
class Comparison:
    production: VariantAnswers
    shadow: VariantAnswers
    paired: int  # requests both answered (same inferenceId or eventId)
    agreed: int
    # production's answers while the shadow had copies of them (between the first and the
    # last paired request, or since the shadow's first answer when none pair); None: all
    production_while_shadowed: int | None = None
    # how many of those copies the shadow answered (the paired ones); None: unknown (no
    # request pairs, as on AWS without InferenceId), its answer count stands in
    copies_answered: int | None = None

    @property
    def agreement(self) -> float:
        return self.agreed / self.paired if self.paired else 0.0

    @property
    def answered_share(self) -> float:
        """The shadow's answers per production answer while it was the shadow (1.0: it
        answered every copy)."""
        copies = self.production_while_shadowed
        copies = self.production.answers if copies is None else copies
        answered = self.shadow.answers if self.copies_answered is None else self.copies_answered
        return min(1.0, answered / copies) if copies else 0.0

    def lines(self) -> list[str]:
        return [
            self.production.line(),
            self.shadow.line(),
            f"{self.shadow.variant} vs {self.production.variant}: agreement "
            f"{self.agreement:.3f} on {self.paired} paired requests (class mix distance "
            f"{self.class_mix_distance():.3f}); confidence shift "
            f"{self.shadow.mean_confidence - self.production.mean_confidence:+.3f}, doubtful "
            f"share shift {self.shadow.doubtful_share - self.production.doubtful_share:+.3f}; "
            f"answered {self.answered_share:.2f} of production's requests",
        ]

    def problem(self, min_agreement: float, min_compared: int) -> str | None:
        """Why the shadow must not take traffic, or None."""
        if self.production.answers < min_compared:
            return (
                f"only {self.production.answers} production answers captured (need "
                f"{min_compared}): too little traffic to compare"
            )
        if self.answered_share < MIN_ANSWERED_SHARE:
            return (
                f"{self.shadow.variant} answered {self.answered_share:.2f} of the requests "
                f"copied to it ({self.shadow.answers} answers; errors are not captured)"
            )
        if self.paired >= min_compared:
            if self.agreement < min_agreement:
                return (
                    f"{self.shadow.variant} agrees with {self.production.variant} on "
                    f"{self.agreement:.3f} of requests (need {min_agreement:g})"
                )
            return None
        # Unpaired (the captures share no inferenceId or eventId): the class mixes bound
        # the agreement from above, 1 - total variation distance.
        if 1 - self.class_mix_distance() < min_agreement:
            return (
                f"{self.shadow.variant}'s class mix differs from {self.production.variant}'s "
                f"by {self.class_mix_distance():.3f}: they agree on at most "
                f"{1 - self.class_mix_distance():.3f} of requests (need {min_agreement:g})"
            )
        return None

    def class_mix_distance(self) -> float:
        """Total variation distance between the two variants' predicted-class shares."""
        classes = set(self.production.classes) | set(self.shadow.classes)
        ours = max(1, self.production.answers)
        theirs = max(1, self.shadow.answers)
        return 0.5 * sum(
            abs(self.production.classes.get(c, 0) / ours - self.shadow.classes.get(c, 0) / theirs)
            for c in classes
        )


def _threshold() -> float:
    try:
        return threshold_from_environment(os.environ)
    except ThresholdError:
        return threshold_from_environment({})


def _answers(
    bucket: str, endpoint: str, variant: str, since: datetime, threshold: float
) -> tuple[VariantAnswers, dict[str, int], list[datetime], dict[str, datetime]]:
    """A variant's summary, its best class by inferenceId or eventId, its answers' times,
    and the time of each keyed answer."""
    source = CaptureSource(bucket, f"{CAPTURE_PREFIX}/{endpoint}/{variant}/")
    best: dict[str, int] = {}
    confidence_sum, doubtful, answers = 0.0, 0, 0
    classes: dict[int, int] = {}
    times: list[datetime] = []
    keyed_times: dict[str, datetime] = {}
    for record in read_records(source, ReadCounts(), since=since):
        if record.time is not None:
            times.append(record.time)
        top = max(range(len(record.probabilities)), key=record.probabilities.__getitem__)
        confidence = record.probabilities[top]
        answers += 1
        confidence_sum += confidence
        doubtful += confidence < threshold
        classes[top] = classes.get(top, 0) + 1
        # The caller's InferenceId pairs the two answers to one request wherever the
        # endpoint runs; the local endpoint also gives both records one eventId.
        key = record.inference_id or record.event_id
        if key:
            best[key] = top
            if record.time is not None:
                keyed_times[key] = record.time
    summary = VariantAnswers(
        variant,
        answers,
        confidence_sum / answers if answers else 0.0,
        doubtful / answers if answers else 0.0,
        classes,
    )
    return summary, best, times, keyed_times


def compare(
    bucket: str, endpoint: str, production: str, shadow: str, since: datetime
) -> Comparison:
    """Compare `shadow`'s captured answers since `since` with `production`'s."""
    since = since.replace(microsecond=0)  # inferenceTime is to the second
    threshold = _threshold()
    ours, ours_best, our_times, our_keyed = _answers(bucket, endpoint, production, since, threshold)
    theirs, theirs_best, their_times, _ = _answers(bucket, endpoint, shadow, since, threshold)
    paired = [event for event in theirs_best if event in ours_best]
    agreed = sum(1 for event in paired if theirs_best[event] == ours_best[event])
    paired_times = [our_keyed[event] for event in paired if event in our_keyed]
    if paired_times:
        # The shadow stage: from the first to the last request both answered. After it the
        # new version may serve as a production variant, and those answers are no copies.
        start, end = min(paired_times), max(paired_times)
        shadowed = sum(1 for moment in our_times if start <= moment <= end)
        return Comparison(ours, theirs, len(paired), agreed, shadowed, len(paired))
    first = min(their_times, default=None)
    since_first = None if first is None else sum(1 for moment in our_times if moment >= first)
    return Comparison(ours, theirs, len(paired), agreed, since_first)


# --- `python -m training_job monitor versions` --------------------------------------


_minutes = bounded(int, "a number of minutes from 1 to 10080 (a week)", 1, 7 * 24 * 60)
_share = bounded(float, "a share from 0 to 1", 0, 1)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "versions",
        help="compare two variants of the endpoint (shadow vs production, or a canary's "
        "two versions) from their captured answers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bucket", required=True, help="the bucket holding data_capture/")
    parser.add_argument("--endpoint-name", required=True, help="the endpoint")
    parser.add_argument("--production", required=True, help="the serving variant (e.g. v1)")
    parser.add_argument("--shadow", required=True, help="the variant to compare (e.g. v2)")
    parser.add_argument(
        "--minutes",
        type=_minutes,
        default=60,
        help="compare the answers of the last MINUTES minutes (default: %(default)s)",
    )
    parser.add_argument(
        "--min-agreement",
        type=_share,
        default=0.9,
        help="exit 1 when the variants agree on less than this share (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:  # exit 1 means the versions differ, so a bucket that cannot be read is a 2
        require_region(boto3.client("s3"), args.bucket)
    except BucketError as error:
        raise UsageError(str(error)) from error
    since = datetime.now(UTC) - timedelta(minutes=args.minutes)
    comparison = compare(args.bucket, args.endpoint_name, args.production, args.shadow, since)
    for line in comparison.lines():
        print(line)
    problem = comparison.problem(args.min_agreement, 1)
    if problem:
        print(f"versions differ: {problem}")
        return 1
    return 0
