"""Rollout under load: does any request fail or go missing because of a switch?

Starts a local AWS and a local endpoint (`deploy --mode local` of approved version 1,
variant v1, one worker) with more approved versions in its model registry
(tests/rollout_stack.py VERSIONS, made by tests/rollout_models.py: the good one again as
version 2, one that answers a constant, one whose weights error, one whose own code
raises, one that answers slowly, one sure of one class for every photo), then drives a
bounded load (--clients threads, each one InvokeEndpoint at a time through the local AWS,
no retries) through these phases:

  steady              no switch: the reference the other phases are compared with
  good rollout        `training_job rollout` of the good version: shadow, canary, all
  erroring canary     `rollout --skip-shadow` of the erroring version: rolled back
  broken-code canary  `rollout --skip-shadow` of the version whose code raises
  broken-code shadow  `rollout` of the same version with its shadow stage first
  constant canary     `rollout --skip-shadow` of the constant version
  confident canary    `rollout --skip-shadow` of the version sure of one class for every
                      photo (caught by the class-mix alarm)
  slow canary         `rollout --skip-shadow --max-latency-ms 500` of the slow version

and prints, per phase, requests, answers per variant, the client failures: the bad
model's own answers (ModelError from its 500) and any other (a switch's failure, whose
goal is zero). Each bad version must end with its rollout's exit 1 (stopped); the good
one with exit 0. "Lost" is requests sent but neither answered nor failed (a client thread
still waiting two minutes after its phase). Throughput is relative to
the steady phase of the same run.

    .venv/bin/python benchmarks/rollout_under_load.py [--clients 2] [--steady-seconds 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.rollout_stack import (  # noqa: E402
    VERSIONS,
    Load,
    LoadResult,
    Stack,
    rollout_stack,
    run_command,
)

DEFAULT_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar-100-python-vehicles.tar.gz"
# The slow version sleeps rollout_models.SLOW_SECONDS (1 s) before each batch.
SLOW_ALARM_MS = "500"
FAST = [
    "--canary-percent", "20", "--canary-seconds", "8", "--termination-wait-seconds", "3",
    "--poll-seconds", "0.3", "--alarm-period-seconds", "10", "--max-latency-ms", "20000",
]  # fmt: skip


def phase(stack: Stack, clients: int, argv: list[str] | None, seconds: float) -> tuple:
    started = time.monotonic()
    with Load(stack, clients) as load:
        if argv is None:
            time.sleep(seconds)
            outcome = "-"
        else:
            done = run_command(*argv)
            outcome = f"exit {done.returncode}"
            if done.returncode not in (0, 1):
                print(done.stdout + done.stderr, file=sys.stderr)
            else:  # what stopped it, or that it finished
                last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
                print(f"  rollout: {' '.join(last)[:300]}", file=sys.stderr, flush=True)
    return load.result, time.monotonic() - started, outcome


def row(name: str, result: LoadResult, seconds: float, outcome: str, reference: float) -> str:
    answered = len(result.answers)
    failed = len(result.failures)
    model_errors = result.failure_codes().get("ModelError", 0)
    rate = (answered + failed) / seconds
    variants = ", ".join(f"{v}={n}" for v, n in sorted(result.variants().items()))
    return (
        f"| {name} | {outcome} | {answered + failed} | {variants} | {model_errors} | "
        f"{failed - model_errors} | {result.lost()} | {seconds:.0f} | {rate:.1f} | "
        f"{rate / reference:.2f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2, help="load threads (default: 2)")
    parser.add_argument(
        "--steady-seconds", type=float, default=20.0, help="the reference phase (default: 20)"
    )
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="CIFAR-100 data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work, rollout_stack(Path(work), args.archive) as stack:
        rollout = ["rollout", "--model-group", stack.group, "--endpoint-name", stack.endpoint,
                   "--bucket", stack.bucket]  # fmt: skip
        phases = [
            ("steady", None),
            (
                "good rollout (shadow, canary, all)",
                [*rollout, "--model-version", str(VERSIONS["good"]),
                 "--shadow-seconds", "8", "--min-compared", "5", *FAST],
            ),
            (
                "erroring canary (rolled back)",
                [*rollout, "--model-version", str(VERSIONS["erroring"]), "--skip-shadow", *FAST],
            ),
            (
                "broken-code canary (rolled back)",
                [*rollout, "--model-version", str(VERSIONS["broken-code"]), "--skip-shadow",
                 *FAST],
            ),
            (
                "broken-code shadow (stopped)",
                [*rollout, "--model-version", str(VERSIONS["broken-code"]),
                 "--shadow-seconds", "8", "--min-compared", "5", *FAST],
            ),
            (
                "constant canary (rolled back)",
                [*rollout, "--model-version", str(VERSIONS["constant"]), "--skip-shadow", *FAST],
            ),
            (
                "confident-constant canary (rolled back)",
                [*rollout, "--model-version", str(VERSIONS["confident"]), "--skip-shadow",
                 *FAST],
            ),
            (
                "slow canary (rolled back)",
                [*rollout, "--model-version", str(VERSIONS["slow"]), "--skip-shadow", *FAST,
                 "--max-latency-ms", SLOW_ALARM_MS],
            ),
        ]  # fmt: skip
        rows = []
        reference = 0.0
        for name, argv in phases:
            result, seconds, outcome = phase(stack, args.clients, argv, args.steady_seconds)
            if argv is None:
                reference = (len(result.answers) + len(result.failures)) / seconds
            rows.append(row(name, result, seconds, outcome, reference))
            print(f"{name}: done", file=sys.stderr, flush=True)
    print(f"{args.clients} clients, one request at a time each, through the local AWS")
    print(
        "| phase | rollout | requests | answers by variant | model errors (bad version) | "
        "switch failures | lost | seconds | requests/s | vs steady |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for line in rows:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
