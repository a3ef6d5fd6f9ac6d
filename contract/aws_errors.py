"""The error code of a failed AWS call: botocore's ClientError carries the service's
answer in `response`, whose `Error.Code` names the error ("NoSuchKey",
"ConditionalCheckFailedException", ...); the code is what callers branch on, never the
message. Standard library only (every Lambda package ships it): the error is read by its
`response` attribute, so nothing here imports botocore.
"""

from __future__ import annotations

from typing import Any


def error_code(error: BaseException) -> str:
    """`error`'s AWS error code, or "" when it carries none (not an AWS error answer)."""
    response: Any = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code") or "")
