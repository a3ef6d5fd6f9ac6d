"""Every handler's log: one JSON object per line of stdout, with the request id.

A few lines of stdlib json rather than AWS Lambda Powertools: Powertools would be a
dependency in every package and tens of milliseconds of cold start, for one JSON object
per line. Standard library only, so every package ships it and the threshold filter stays
fast to load.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


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
