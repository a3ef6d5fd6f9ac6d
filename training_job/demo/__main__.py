"""`python -m training_job.demo`: the main job, the whole workflow in local mode, end to end
(`make demo` runs it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training_job.arguments import port_number, positive_int
from training_job.demo.run import LOCAL_AWS, Demo

STATE_DIR = Path(".local")  # where `python -m local_aws up` keeps aws.env, aws.pid, aws.log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training_job.demo",
        description="The main job: start the local AWS (unless one runs), stage the data, "
        "train, and print a summary; stops everything it started, on Ctrl-C too. Offline, "
        "set SCONES_CIFAR_SOURCE to a local copy of the CIFAR-100 archive.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=STATE_DIR,
        help="where the local AWS it starts keeps aws.pid and aws.log",
    )
    parser.add_argument("--bucket", default="scones-unlimited-local", help="the data bucket")
    parser.add_argument(
        "--port", type=port_number, default=LOCAL_AWS.DEFAULT_PORT, help="the local AWS port"
    )
    parser.add_argument(
        "--endpoint-port",
        type=port_number,
        default=LOCAL_AWS.DEFAULT_ENDPOINT_PORT,
        help="the local endpoint port",
    )
    parser.add_argument(
        "--epochs", type=positive_int, help="training epochs (default: the recipe's)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("out/demo"), help="where summary.json and the report go"
    )
    args = parser.parse_args(argv)
    return Demo(
        bucket=args.bucket,
        port=args.port,
        endpoint_port=args.endpoint_port,
        state_dir=args.state_dir,
        out_dir=args.out,
        epochs=args.epochs,
    ).main()


if __name__ == "__main__":
    sys.exit(main())
