"""How a monitor command ends: one exit code per outcome, and the guard that turns
errors into them (and SIGTERM into a clean exit)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from training_job.data.bucket import BucketError, require_region
from training_job.monitor.baseline import BaselineError
from training_job.monitor.captures import CaptureSourceError

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


def guarded(body: Any, args: argparse.Namespace) -> int:
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
