"""`python -m local_aws up|down|serve|status`: the local AWS for development and tests.

`up` starts moto's server on 127.0.0.1 in the background, records this checkout's serving
image in it (local_aws/serving_image.py) and writes `.local/aws.env`;
`down` stops it. `make local-up` and `make local-down` call these. Both go through
`local_aws.supervisor`, as the local endpoint's deploy does: `aws.env` is written only
once the started server itself answers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from local_aws.server import (
    DEFAULT_ENDPOINT_PORT,
    DEFAULT_HOST,
    DEFAULT_PORT,
    STOP_TIMEOUT_SECONDS,
    client_environment,
    endpoint_url,
    record_serving_image,
    serve,
    start_in_background,
    write_env_file,
)
from local_aws.supervisor import AlreadyRunning, Daemon, SupervisorError
from training_job.arguments import port_number

STATE_DIR = Path(".local")


def _daemon(state_dir: Path) -> Daemon:
    return Daemon("aws", state_dir)  # aws.pid, aws.log, aws.lock


def up(port: int, host: str, state_dir: Path, endpoint_port: int) -> int:
    env_file = state_dir / "aws.env"
    daemon = _daemon(state_dir)
    # The server's environment is what the Lambda handlers it runs see of the endpoints.
    variables = client_environment(port, host, endpoint_port)
    try:
        with daemon.claim() as claim:
            env_file.unlink(missing_ok=True)  # it described a server that is gone
            start_in_background(claim, port, host, endpoint_port, variables)
    except AlreadyRunning:
        if env_file.exists():
            print(f"local AWS already running; environment in {env_file}")
            return 0
        raise
    try:
        record_serving_image(port, host)
    except BaseException:
        daemon.stop(STOP_TIMEOUT_SECONDS)  # a local AWS without its setup is not up
        raise
    write_env_file(env_file, variables)
    url = endpoint_url(port, host)
    print(f"local AWS on {url}; `source {env_file}` points boto3, the AWS CLI and sls at it")
    return 0


def down(state_dir: Path) -> int:
    outcome = _daemon(state_dir).stop(STOP_TIMEOUT_SECONDS)
    print(f"local AWS {outcome}")
    (state_dir / "aws.env").unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local_aws",
        description="AWS APIs on 127.0.0.1 (moto's server) for running this project "
        "without an AWS account.",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=STATE_DIR, help="where aws.env, aws.pid and aws.log go"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("up", "start in the background and write STATE_DIR/aws.env"),
        ("serve", "serve in the foreground until Ctrl-C or SIGTERM"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--port", type=port_number, default=DEFAULT_PORT)
        command.add_argument(
            "--host", default=DEFAULT_HOST, help="listen address (default: loopback only)"
        )
        command.add_argument(
            "--endpoint-port",
            type=port_number,
            default=DEFAULT_ENDPOINT_PORT,
            help="where the local SageMaker endpoint listens; the Lambda handlers and "
            "aws.env's AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME point there",
        )
    commands.add_parser("down", help="stop the server that `up` started")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return up(args.port, args.host, args.state_dir, args.endpoint_port)
        if args.command == "down":
            return down(args.state_dir)
    except SupervisorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    serve(args.port, args.host, args.endpoint_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
