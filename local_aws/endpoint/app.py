"""The HTTP face of one worker: SageMaker's container contract and its Runtime API.

Routes:
  GET  /ping                                 the container's health check
  POST /invocations                          the container's inference route
  POST /endpoints/{EndpointName}/invocations the SageMaker Runtime API's InvokeEndpoint,
                                             so boto3's `sagemaker-runtime` client works
                                             unchanged (SigV4 headers are accepted, unread)
  GET  /metrics                              Prometheus text

The container route answers a refused request with its own status (400, 413, 415, ...)
and a JSON body `{"error": NAME, "message": TEXT}`. The Runtime API route answers as AWS
does: what the model container refuses becomes `ModelError` (424, with the container's
status and body as OriginalStatusCode / OriginalMessage), an unknown endpoint becomes
`ValidationError` (400), overload `ServiceUnavailable` (503), each with the
`x-amzn-ErrorType` header botocore reads, and a body over 6 MB AWS's own 413.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from aiohttp import web

from local_aws.endpoint import metrics as metrics_text
from local_aws.endpoint.batcher import Answer, MicroBatcher, Overloaded
from local_aws.endpoint.capture_writer import CaptureWriter, Invocation
from local_aws.endpoint.config import EndpointConfig
from local_aws.endpoint.metrics import Slot, WorkerMetrics

ACCOUNT_ID = "123456789012"  # moto's account; AWS names the caller's in its messages
REGION = "us-east-1"
RETRY_AFTER_SECONDS = "1"
ERROR_NAMES = {
    400: "InvalidInput",
    406: "NotAcceptable",
    408: "RequestTimeout",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    500: "InternalFailure",
    503: "ServiceUnavailable",
}


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(status: int, document: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(document).encode(),
        content_type="application/json",
        headers=headers,
    )


def container_error(status: int, message: str, name: str | None = None) -> web.Response:
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    error = name or ERROR_NAMES.get(status, "Error")
    return _json(status, {"error": error, "message": message}, headers)


def runtime_error(status: int, error_type: str, document: dict[str, object]) -> web.Response:
    headers = {"x-amzn-ErrorType": error_type}
    if status == 503:
        headers["Retry-After"] = RETRY_AFTER_SECONDS
    return _json(status, document, headers)


def payload_too_large(limit: int) -> web.Response:
    """What the SageMaker Runtime answers a body over its limit, before any container sees
    it: status 413 and no error type, so botocore raises ClientError with code "413"
    (reported as "An error occurred (413) when calling the InvokeEndpoint operation: HTTP
    content length exceeded 5246976 bytes." when the limit was 5 MB; it is 6 MB now)."""
    return _json(413, {"message": f"HTTP content length exceeded {limit} bytes."})


class EndpointApp:
    def __init__(
        self,
        config: EndpointConfig,
        batcher: MicroBatcher,
        capture: CaptureWriter | None,
        metrics: WorkerMetrics,
        all_slots: Sequence[Slot],
    ) -> None:
        self.config = config
        self.batcher = batcher
        self.capture = capture
        self.metrics = metrics
        self.all_slots = all_slots

    def build(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/metrics", self.render_metrics)
        app.router.add_post("/invocations", self.container_invocation)
        app.router.add_post("/endpoints/{endpoint_name}/invocations", self.runtime_invocation)
        return app

    async def ping(self, _request: web.Request) -> web.Response:
        return web.Response(text="", status=200)

    async def render_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            text=metrics_text.render(self.all_slots),
            content_type="text/plain",
            headers={"X-Prometheus-Format": "0.0.4"},
        )

    async def container_invocation(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            answer = await self._invoke(request)
        except _Refused as refused:
            response = container_error(refused.status, refused.message)
        else:
            if answer.status == 200:
                response = web.Response(body=answer.body, content_type=answer.content_type)
            else:
                response = container_error(answer.status, answer.error_message or "")
        self.metrics.observe_request(response.status, time.perf_counter() - started)
        return response

    async def runtime_invocation(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        name = request.match_info["endpoint_name"]
        if name != self.config.endpoint_name:
            response = runtime_error(
                400,
                "ValidationError",
                {"message": f"Endpoint {name} of account {ACCOUNT_ID} not found."},
            )
        else:
            try:
                answer = await self._invoke(request)
            except _Refused as refused:
                if refused.status == 413:
                    return self._observed(payload_too_large(self.config.max_body_bytes), started)
                answer = Answer(refused.status, b"", "application/json", refused.message)
            if answer.status == 200:
                response = web.Response(
                    body=answer.body,
                    headers={
                        "Content-Type": answer.content_type,
                        "x-Amzn-Invoked-Production-Variant": self.config.variant,
                    },
                )
            elif answer.status == 503:
                response = runtime_error(
                    503, "ServiceUnavailable", {"message": answer.error_message or ""}
                )
            else:
                response = self._model_error(answer)
        return self._observed(response, started)

    def _observed(self, response: web.Response, started: float) -> web.Response:
        self.metrics.observe_request(response.status, time.perf_counter() - started)
        return response

    def _model_error(self, answer: Answer) -> web.Response:
        """What AWS answers when the model container answers with an error."""
        original = json.dumps(
            {
                "error": ERROR_NAMES.get(answer.status, "Error"),
                "message": answer.error_message or "",
            }
        )
        kind = "client" if answer.status < 500 else "server"
        log_group = f"/aws/sagemaker/Endpoints/{self.config.endpoint_name}"
        return runtime_error(
            424,
            "ModelError",
            {
                "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
                "LogStreamArn": f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{log_group}",
                "Message": f"Received {kind} error ({answer.status}) from primary with message "
                f'"{original}". See the endpoint\'s log for more information.',
                "OriginalMessage": original,
                "OriginalStatusCode": answer.status,
            },
        )

    async def _read_body(self, request: web.Request) -> bytes:
        """The body, refused by its Content-Length before reading when it is too large,
        and counted while reading when it has none (chunked)."""
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _Refused(413, f"body of {request.content_length} bytes is over {limit} bytes")
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.config.body_timeout_seconds):
                async for chunk in request.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > limit:
                        raise _Refused(413, f"body is over {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError as error:
            raise _Refused(408, "the request body was not sent in time") from error
        return b"".join(chunks)

    async def _invoke(self, request: web.Request) -> Answer:
        body = await self._read_body(request)
        content_type = request.headers.get("Content-Type", "")
        try:
            answer = await self.batcher.infer(body, content_type, request.headers.get("Accept", ""))
        except Overloaded as error:
            raise _Refused(503, "the endpoint is at capacity; retry after a second") from error
        if answer.status == 200 and self._sampled():
            assert self.capture is not None
            self.capture.offer(
                Invocation(
                    input_body=body,
                    input_content_type=content_type,
                    output_body=answer.body,
                    output_content_type=answer.content_type,
                    inference_time=datetime.now(UTC),
                    inference_id=request.headers.get("X-Amzn-SageMaker-Inference-Id"),
                )
            )
        return answer

    def _sampled(self) -> bool:
        if self.capture is None or self.config.capture_sampling <= 0:
            return False
        return random.uniform(0, 100) < self.config.capture_sampling
