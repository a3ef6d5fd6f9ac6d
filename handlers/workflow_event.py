"""The workflow event every handler reads and returns, its errors, and JSON logging.

The event is the reference's `{"image_data": "", "s3_bucket": "", "s3_key": "",
"inferences": []}`. Each handler returns `{"statusCode": 200, "body": <event>}` and also
accepts such a return value as its event, so the handlers chain as the reference does.

Error classes are named for the state machine: Lambda reports an unhandled exception's
class name as its `errorType`, which is what a Catch or Retry matches.

Logging is a few lines of stdlib json rather than AWS Lambda Powertools: Powertools would
be a dependency in every package and tens of milliseconds of cold start, for one JSON
object per line.

This module imports only the standard library, so the threshold filter stays fast to load.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

# The classifier's output order: label 0 is bicycle, 1 is motorcycle (as in the manifests).
LABELS = ("bicycle", "motorcycle")

MAX_KEY_LENGTH = 1024  # S3's own limit on a key
DEFAULT_MAX_IMAGE_BYTES = 5 * 1024 * 1024

# Magic bytes of the image formats the endpoint accepts, with the content type to send.
_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


class WorkflowError(Exception):
    """Base of the errors a handler raises on purpose (never caught by a handler)."""


class InvalidEvent(WorkflowError):
    """The event is not a workflow event, or lacks what this handler needs."""


class ConfigurationError(WorkflowError):
    """An environment variable the handler needs is missing or malformed."""


class ImageTooLarge(WorkflowError):
    """The image is over MAX_IMAGE_BYTES."""


class NotAnImage(WorkflowError):
    """The bytes are not a PNG, JPEG, GIF, BMP or WebP image."""


class WorkflowEvent:
    # A plain class, not a dataclass: `dataclasses` alone adds ~5 ms to every cold start.
    def __init__(
        self,
        image_data: str = "",
        s3_bucket: str = "",
        s3_key: str = "",
        inferences: list[float] | None = None,
    ) -> None:
        self.image_data = image_data
        self.s3_bucket = s3_bucket
        self.s3_key = s3_key
        self.inferences = inferences if inferences is not None else []

    @classmethod
    def parse(cls, event: object) -> WorkflowEvent:
        """Read a workflow event, or a previous handler's whole return value."""
        if not isinstance(event, dict):
            raise InvalidEvent(f"the event must be a JSON object, not {type(event).__name__}")
        body = event.get("body")
        if isinstance(body, dict):
            event = body
        image_data = _field(event, "image_data", str, "")
        s3_bucket = _field(event, "s3_bucket", str, "")
        s3_key = _field(event, "s3_key", str, "")
        inferences = _field(event, "inferences", list, [])
        if len(s3_key) > MAX_KEY_LENGTH:
            raise InvalidEvent(f"s3_key is longer than S3's limit of {MAX_KEY_LENGTH} characters")
        if not all(_is_probability(value) for value in inferences):
            raise InvalidEvent("inferences must be a list of numbers between 0 and 1")
        return cls(image_data, s3_bucket, s3_key, [float(value) for value in inferences])

    def response(self) -> dict[str, Any]:
        body = {
            "image_data": self.image_data,
            "s3_bucket": self.s3_bucket,
            "s3_key": self.s3_key,
            "inferences": self.inferences,
        }
        return {"statusCode": 200, "body": body}

    def top_inference(self) -> tuple[str, float]:
        """The most likely label and its probability (the label's index if unnamed)."""
        best = max(range(len(self.inferences)), key=self.inferences.__getitem__)
        label = LABELS[best] if best < len(LABELS) else str(best)
        return label, self.inferences[best]


def _field(event: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = event.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise InvalidEvent(f"{name} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def _is_probability(value: object) -> bool:
    # bool is an int subclass; True is not a probability.
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


_clients: dict[str, Any] = {}


def aws_client(service: str) -> Any:
    """One client per AWS service and container, created on first use.

    botocore's session rather than boto3's: the same client without boto3's own imports,
    which cost ~40 ms of every cold start (benchmarks/handler_cold_start.py)."""
    client = _clients.get(service)
    if client is None:
        import botocore.session

        client = _clients[service] = botocore.session.get_session().create_client(service)
    return client


def image_content_type(data: bytes) -> str | None:
    """The image's content type from its magic bytes, or None if it is not an image."""
    for signature, content_type in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def max_image_bytes() -> int:
    """MAX_IMAGE_BYTES from the environment (default 5 MB), validated."""
    raw = os.environ.get("MAX_IMAGE_BYTES", "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_BYTES
    try:
        limit = int(raw)
    except ValueError:
        raise ConfigurationError(f"MAX_IMAGE_BYTES must be a whole number, got {raw!r}") from None
    if limit <= 0:
        raise ConfigurationError(f"MAX_IMAGE_BYTES must be positive, got {limit}")
    return limit


def log(level: str, message: str, context: object = None, **fields: Any) -> None:
    """Write one JSON object on a line of stdout, which CloudWatch Logs keeps as is."""
    record: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
        "level": level,
        "message": message,
        "function": getattr(context, "function_name", None)
        or os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""),
        "request_id": getattr(context, "aws_request_id", None),
    }
    record.update({name: value for name, value in fields.items() if value is not None})
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()
