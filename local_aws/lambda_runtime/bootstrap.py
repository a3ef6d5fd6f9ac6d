"""The local Lambda runtime: one warm worker process for one function version.

Started by `local_aws.lambda_executor` as `python -I bootstrap.py` with the unpacked package
as its working directory and the function's environment. Like Lambda's Python runtime it
imports the handler once (the init phase), then serves invocations one at a time: a JSON
request line on stdin, a JSON response line on the private protocol pipe. The handler's own
prints go to stderr, so they cannot corrupt the protocol. Standard library only: this file
runs beside the function's code, not beside the project's.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any


class LambdaContext:
    """The attributes and method of the context object Lambda's Python runtime passes."""

    def __init__(self, request_id: str, deadline: float) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
        self.invoked_function_arn = os.environ["LOCAL_AWS_FUNCTION_ARN"]
        self.memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def error_payload(error: BaseException, error_type: str | None = None) -> dict[str, Any]:
    # Lambda lists the handler's frames, not the runtime's: drop this file's own.
    frames = [
        frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename != __file__
    ]
    return {
        "errorMessage": str(error),
        "errorType": error_type or type(error).__name__,
        "requestId": "",
        "stackTrace": traceback.format_list(frames),
    }


def load_handler(handler: str) -> tuple[Any, dict[str, Any] | None]:
    """The handler function, or the init error Lambda would report for every invocation."""
    module_path, _, function_name = handler.rpartition(".")
    if not module_path or not function_name:
        message = f"Bad handler '{handler}': not enough values to unpack (expected 2, got 1)"
        return None, {"errorMessage": message, "errorType": "Runtime.MalformedHandlerName"}
    module_name = module_path.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the runtime reports any import failure, whatever its type
        payload = error_payload(error, "Runtime.ImportModuleError")
        payload["errorMessage"] = f"Unable to import module '{module_name}': {error}"
        return None, payload
    function = getattr(module, function_name, None)
    if not callable(function):
        message = f"Handler '{function_name}' missing on module '{module_name}'"
        return None, {"errorMessage": message, "errorType": "Runtime.HandlerNotFound"}
    return function, None


def serve(requests: Any, responses: Any) -> None:
    handler, init_error = load_handler(os.environ["_HANDLER"])
    responses.write(json.dumps({"ready": True}) + "\n")
    responses.flush()
    for line in requests:
        request = json.loads(line)
        request_id = request["request_id"]
        response: dict[str, Any]
        if init_error is not None:
            response = {"error": {**init_error, "requestId": request_id}}
        else:
            context = LambdaContext(request_id, request["deadline"])
            try:
                result = handler(json.loads(request["event"]), context)
            except Exception as error:  # any exception is the function's error, as in Lambda
                response = {"error": {**error_payload(error), "requestId": request_id}}
            else:
                try:
                    response = {"payload": json.dumps(result)}
                except (TypeError, ValueError) as error:
                    message = f"Unable to marshal response: {error}"
                    response = {
                        "error": {
                            "errorMessage": message,
                            "errorType": "Runtime.MarshalError",
                            "requestId": request_id,
                            "stackTrace": [],
                        }
                    }
        responses.write(json.dumps(response) + "\n")
        responses.flush()


def main() -> None:
    # The protocol owns the original stdin/stdout; the handler's prints go to stderr.
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    responses = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    sys.path.insert(0, os.getcwd())  # LAMBDA_TASK_ROOT comes first, as /var/task does
    serve(requests, responses)


if __name__ == "__main__":
    main()
