"""`monitor review`: people's answers per model version, from the decisions table."""

from __future__ import annotations

import argparse
import sys

from contract.review_quality import ALL_VERSIONS
from training_job.monitor.exits import EXIT_ANSWERS, EXIT_OK, EXIT_UNUSABLE, guarded
from training_job.monitor.report_page import write_summary
from training_job.monitor.review import as_dict, review_measures, summary_lines


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

    return guarded(body, args)
