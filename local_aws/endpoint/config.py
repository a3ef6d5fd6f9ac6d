"""The local endpoint's settings: one dataclass, its command-line options, and back.

`python -m training_job deploy --mode local` (through local_aws/endpoint/daemon.py) and
`python -m local_aws.endpoint` share these options; the detached server is started with
`to_argv()` of the same settings.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path

from contract.capture import MAX_CAPTURED_BODY_BYTES
from training_job.arguments import bounded, port_number, positive_int, positive_number
from training_job.serving.capture import DEFAULT_VARIANT
from training_job.serving.deployment import DEFAULT_ENDPOINT_NAME

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# SageMaker's InvokeEndpoint body limit (6 MB: 6,291,456 bytes, the `max` of botocore's
# BodyBlob shape); the Runtime API route answers a larger body as AWS does. It is also the
# most the option allows: every accepted body must fit in a capture line that the monitor
# reads (contract/capture.py sizes its limits for it).
DEFAULT_MAX_BODY_BYTES = MAX_CAPTURED_BODY_BYTES


@dataclass(frozen=True)
class EndpointConfig:
    model_dir: Path
    endpoint_name: str = DEFAULT_ENDPOINT_NAME
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    torch_threads: int = 0  # 0: the CPU cores divided among the workers
    max_batch: int = 32
    max_batch_wait_ms: float = 2.0
    max_queue: int = 256
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_seconds: float = 30.0
    header_timeout_seconds: float = 10.0
    capture_bucket: str | None = None
    capture_sampling: float = 100.0
    capture_flush_seconds: float = 2.0
    capture_spool_bytes: int = 256 * 1024 * 1024
    capture_spool_dir: Path | None = None  # None: capture-spool/ beside the model directory
    # The production variant serving model_dir at start (deploy: `v<version>`).
    variant_name: str = DEFAULT_VARIANT

    def spool_dir(self, variant: str | None = None) -> Path:
        """Where a variant's records wait for S3: the starting variant's in the spool
        directory itself (as before variants), every other one's in a folder of its own."""
        root = self.capture_spool_dir or self.model_dir.parent / "capture-spool"
        if variant is None or variant == self.variant_name:
            return root
        return root / "variants" / variant

    def routing_dir(self) -> Path:
        """The routing file and the models of variants added later (routing.py): one per
        listening port, so two endpoints started from one model directory never share it."""
        return self.model_dir.parent / "routing" / f"{self.endpoint_name}-{self.port}"

    def threads_per_worker(self) -> int:
        if self.torch_threads > 0:
            return self.torch_threads
        return max(1, (os.cpu_count() or 1) // self.workers)

    def to_argv(self) -> list[str]:
        """The options that rebuild this config through `add_arguments` + `from_args`."""
        argv: list[str] = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                argv += [f"--{field.name.replace('_', '-')}", str(value)]
        return argv


_percent = bounded(float, "a percentage between 0 and 100", 0, 100)
_body_bytes = bounded(
    int, f"a body size from 1 to {MAX_CAPTURED_BODY_BYTES} bytes", 1, MAX_CAPTURED_BODY_BYTES
)
_threads = bounded(int, "a number of threads (0: the cores divided among the workers)", 0, 1024)
_batch_wait_ms = bounded(float, "a wait from 0 to 1000 milliseconds", 0, 1000)


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The serving options (everything but the model and the endpoint name)."""
    defaults = EndpointConfig(model_dir=Path())
    parser.add_argument(
        "--host",
        default=defaults.host,
        help="listen address (default: %(default)s, loopback only)",
    )
    parser.add_argument(
        "--port", type=port_number, default=defaults.port, help="listen port (default: %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=defaults.workers,
        help="server processes sharing the port (SO_REUSEPORT); each runs every variant's "
        "model in a process of its own that batches on its own (default: %(default)s)",
    )
    parser.add_argument(
        "--torch-threads",
        type=_threads,
        default=defaults.torch_threads,
        help="torch threads per worker, each running whole batches on one core (default: "
        "the CPU cores divided among the workers)",
    )
    parser.add_argument(
        "--max-batch",
        type=positive_int,
        default=defaults.max_batch,
        help="most images one forward pass takes (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch-wait-ms",
        type=_batch_wait_ms,
        default=defaults.max_batch_wait_ms,
        help="how long a batch waits for more requests before it runs (default: %(default)s)",
    )
    parser.add_argument(
        "--max-queue",
        type=positive_int,
        default=defaults.max_queue,
        help="requests a worker holds before it answers 503 with Retry-After "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_body_bytes,
        default=defaults.max_body_bytes,
        help="largest request body; larger ones get 413 (default and most: %(default)s, "
        "InvokeEndpoint's limit, which capture lines are sized for)",
    )
    parser.add_argument(
        "--body-timeout-seconds",
        type=positive_number,
        default=defaults.body_timeout_seconds,
        help="time allowed to send a request body before 408 (default: %(default)s)",
    )
    parser.add_argument(
        "--header-timeout-seconds",
        type=positive_number,
        default=defaults.header_timeout_seconds,
        help="time allowed to send a request's line and headers, from its first byte (or "
        "from the connection's opening); then 408 and the connection is closed "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--capture-sampling",
        type=_percent,
        default=defaults.capture_sampling,
        help="percent of successful requests written to data capture (default: %(default)s)",
    )
    parser.add_argument(
        "--capture-flush-seconds",
        type=positive_number,
        default=defaults.capture_flush_seconds,
        help="how often each worker ships its capture spool to S3 (default: %(default)s)",
    )
    parser.add_argument(
        "--capture-spool-bytes",
        type=positive_int,
        default=defaults.capture_spool_bytes,
        help="local disk per worker for captured records S3 does not have yet; when it is "
        "full, an answer waits (up to 20 s) while S3 takes uploads, and while S3 is away "
        "records are dropped, counted and logged, never the request (default: %(default)s)",
    )
    parser.add_argument(
        "--capture-spool-dir",
        type=Path,
        default=None,
        help="where captured records wait for S3 (default: capture-spool/ beside the model "
        "directory); what a stopped or killed endpoint left there is shipped at its next start",
    )


def add_variant_argument(parser: argparse.ArgumentParser) -> None:
    """The endpoint server's own `--variant-name` (deploy names the variant after the
    version it serves, so it does not offer this option)."""
    parser.add_argument(
        "--variant-name",
        default=DEFAULT_VARIANT,
        help="the production variant that serves the model at start, named in each answer's "
        "X-Amzn-Invoked-Production-Variant (default: %(default)s)",
    )


def from_args(
    args: argparse.Namespace,
    model_dir: Path,
    endpoint_name: str,
    capture_bucket: str | None,
    variant: str | None = None,
) -> EndpointConfig:
    return EndpointConfig(
        model_dir=model_dir,
        endpoint_name=endpoint_name,
        host=args.host,
        port=args.port,
        workers=args.workers,
        torch_threads=args.torch_threads,
        max_batch=args.max_batch,
        max_batch_wait_ms=args.max_batch_wait_ms,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        body_timeout_seconds=args.body_timeout_seconds,
        header_timeout_seconds=args.header_timeout_seconds,
        capture_bucket=capture_bucket,
        capture_sampling=args.capture_sampling,
        capture_flush_seconds=args.capture_flush_seconds,
        capture_spool_bytes=args.capture_spool_bytes,
        capture_spool_dir=args.capture_spool_dir,
        variant_name=variant if variant is not None else args.variant_name,
    )
