"""`python -m local_aws.endpoint --model-dir DIR`: serve an extracted model directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from local_aws.endpoint import config as endpoint_config
from local_aws.endpoint.server import serve
from local_aws.supervisor import SupervisorError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local_aws.endpoint",
        description="Serve an extracted model directory (model.pth, model.json, code/) as a "
        "local SageMaker endpoint until SIGTERM or Ctrl-C. `python -m training_job deploy "
        "--mode local` runs this for a model.tar.gz in S3.",
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="the extracted model.tar.gz")
    parser.add_argument(
        "--endpoint-name",
        default=endpoint_config.DEFAULT_ENDPOINT_NAME,
        help="the name the Runtime API route answers to (default: %(default)s)",
    )
    parser.add_argument(
        "--capture-bucket",
        default=None,
        help="bucket for data capture (s3://BUCKET/data_capture/...); none: no capture",
    )
    endpoint_config.add_arguments(parser)
    endpoint_config.add_variant_argument(parser)
    args = parser.parse_args(argv)
    config = endpoint_config.from_args(
        args,
        model_dir=args.model_dir,
        endpoint_name=args.endpoint_name,
        capture_bucket=args.capture_bucket,
    )
    try:
        return serve(config)
    except (OSError, SupervisorError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
