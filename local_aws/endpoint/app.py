"""The HTTP face of one worker: SageMaker's container contract and its Runtime API.

Routes:
  GET  /ping                                 the container's health check
  POST /invocations                          the container's inference route
  POST /endpoints/{EndpointName}/invocations the SageMaker Runtime API's InvokeEndpoint,
                                             so boto3's `sagemaker-runtime` client works
                                             unchanged (SigV4 headers are accepted, unread)
  GET  /metrics                              Prometheus text
  GET  /_local/routing                       the variants served (routing.py), the
                                             generation every worker serves, and each
                                             variant's counters (the local AWS publishes
                                             them to CloudWatch as SageMaker does)
  PUT  /_local/routing                       new variants: {"routes": [{"variant",
                                             "model_data" (s3://), "weight"}], "shadow":
                                             {"variant", "model_data"} | null}; the local
                                             AWS's UpdateEndpoint calls it (loopback only,
                                             as every route here); each new model's
                                             container is started first, and a model
                                             whose code or weights do not load is
                                             refused (400) before any worker switches

Each invocation is routed to a production variant by weight (or to the caller's
TargetVariant, `X-Amzn-SageMaker-Target-Variant`), answered with
`X-Amzn-Invoked-Production-Variant`, captured under that variant, and copied to the
shadow variant, if any, whose answer is captured and metered but never returned.

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
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aiohttp import web

from contract import variant_metrics
from contract.familiarity import CUSTOM_ATTRIBUTES_HEADER, MAX_CUSTOM_ATTRIBUTES_LENGTH
from contract.threshold import ThresholdError, threshold_from_environment
from local_aws.endpoint import metrics as metrics_text
from local_aws.endpoint import routing
from local_aws.endpoint.capture_writer import CaptureWriter, Invocation
from local_aws.endpoint.config import EndpointConfig
from local_aws.endpoint.container import Answer, ContainerFailed, Overloaded, import_server
from local_aws.endpoint.metrics import MODEL_CLASSES, Slot, WorkerMetrics

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"  # moto's account; AWS names the caller's in its messages
REGION = "us-east-1"
VARIANT_HEADER = "X-Amzn-Invoked-Production-Variant"
TARGET_VARIANT_HEADER = "X-Amzn-SageMaker-Target-Variant"
MAX_CONTROL_BYTES = 64 * 1024
RETRY_AFTER_SECONDS = "1"
# The model server's own table (training_job/code/serve.py, in the image): what the
# endpoint answers in front of the container names its refusals as the container does.
ERROR_NAMES: dict[int, str] = import_server().ERROR_NAMES


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
        variants: routing.VariantPool,
        capture: Callable[[str], CaptureWriter | None],
        metrics: WorkerMetrics,
        all_slots: Sequence[Slot],
    ) -> None:
        self.config = config
        self.variants = variants
        self.capture = capture  # the writer of a variant's records (None: no capture)
        self.metrics = metrics
        self.all_slots = all_slots
        self.shadow_tasks: set[asyncio.Task[None]] = set()
        try:  # "doubtful": below the workflow's threshold, as the filter and monitor read it
            self.threshold = threshold_from_environment(os.environ)
        except ThresholdError:
            self.threshold = threshold_from_environment({})

    def build(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/metrics", self.render_metrics)
        app.router.add_post("/invocations", self.container_invocation)
        app.router.add_post("/endpoints/{endpoint_name}/invocations", self.runtime_invocation)
        app.router.add_get("/_local/routing", self.describe_routing)
        app.router.add_put("/_local/routing", self.replace_routing)
        return app

    async def ping(self, _request: web.Request) -> web.Response:
        return web.Response(text="", status=200)

    async def render_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            text=metrics_text.render(self.all_slots, self.variants.routing.positions),
            content_type="text/plain",
            headers={"X-Prometheus-Format": "0.0.4"},
        )

    async def container_invocation(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            answer, _variant = await self._invoke(request, None)
        except _Refused as refused:
            response = container_error(refused.status, refused.message)
        else:
            if answer.status == 200:
                response = web.Response(
                    body=answer.body,
                    content_type=answer.content_type,
                    headers=custom_attributes_header(answer),
                )
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
            target = request.headers.get(TARGET_VARIANT_HEADER)
            try:
                answer, variant = await self._invoke(request, target)
            except _Refused as refused:
                if refused.status == 413:
                    return self._observed(payload_too_large(self.config.max_body_bytes), started)
                if refused.status == 404:  # an unknown TargetVariant, refused as AWS does
                    return self._observed(
                        runtime_error(400, "ValidationError", {"message": refused.message}),
                        started,
                    )
                answer, variant = (
                    Answer(refused.status, b"", "application/json", refused.message),
                    "",
                )
            if answer.status == 200:
                response = web.Response(
                    body=answer.body,
                    headers={
                        "Content-Type": answer.content_type,
                        VARIANT_HEADER: variant,
                        **custom_attributes_header(answer),
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

    async def _invoke(self, request: web.Request, target_variant: str | None) -> tuple[Answer, str]:
        body = await self._read_body(request)
        content_type = request.headers.get("Content-Type", "")
        accept = request.headers.get("Accept", "")
        current = self.variants.routing  # this request's routing, whatever a switch does
        route = self.variants.choose(target_variant)
        if route is None:
            raise _Refused(
                404,
                f"Invalid target variant {target_variant!r}: endpoint "
                f"{self.config.endpoint_name} has no production variant of that name.",
            )
        answer = await self._answer(route, current, body, content_type, accept)
        event_id = str(uuid.uuid4())
        inference_id = request.headers.get("X-Amzn-SageMaker-Inference-Id")
        await self._capture(route.variant, body, content_type, answer, inference_id, event_id)
        if current.shadow is not None and answer.status == 200:
            task = asyncio.create_task(
                self._shadow(current, body, content_type, accept, answer, inference_id, event_id)
            )
            self.shadow_tasks.add(task)
            task.add_done_callback(self.shadow_tasks.discard)
        return answer, route.variant

    async def _answer(
        self,
        route: routing.Route,
        current: routing.Routing,
        body: bytes,
        content_type: str,
        accept: str,
    ) -> Answer:
        """The route's model's answer, metered under its variant."""
        position = current.position(route.variant)
        started = time.perf_counter()
        with self.variants.serving(route) as batcher:
            try:
                answer = await batcher.infer(body, content_type, accept)
            except Overloaded as error:
                raise _Refused(503, "the endpoint is at capacity; retry after a second") from error
        self.metrics.observe_variant_latency(position, time.perf_counter() - started)
        if answer.status == 200:
            self.metrics.count_variant(position, "invocations")
            probabilities = _probabilities(answer)
            if probabilities is not None and len(probabilities) == len(MODEL_CLASSES):
                # The same values the classify Lambda publishes on AWS (EMF).
                self.metrics.count_answer(
                    position,
                    variant_metrics.answer_values(probabilities, MODEL_CLASSES, self.threshold),
                )
        elif answer.status >= 500:
            self.metrics.count_variant(position, "errors_5xx")
        else:
            self.metrics.count_variant(position, "errors_4xx")
        return answer

    async def _capture(
        self,
        variant: str,
        body: bytes,
        content_type: str,
        answer: Answer,
        inference_id: str | None,
        event_id: str,
    ) -> None:
        """Capture a variant's answered request, when sampled (the production and the
        shadow records of one request share its event id); a full spool holds the answer
        while S3 catches up (capture_writer.py, backpressure)."""
        if answer.status != 200 or not self._sampled(variant):
            return
        writer = self.capture(variant)
        assert writer is not None
        await writer.offer_waiting(
            Invocation(
                input_body=body,
                input_content_type=content_type,
                output_body=answer.body,
                output_content_type=answer.content_type,
                inference_time=datetime.now(UTC),
                inference_id=inference_id,
                event_id=event_id,
            )
        )

    async def _shadow(
        self,
        current: routing.Routing,
        body: bytes,
        content_type: str,
        accept: str,
        production: Answer,
        inference_id: str | None,
        event_id: str,
    ) -> None:
        """The shadow variant's answer to a copy of the request: metered, compared with
        the production answer, captured (with the caller's InferenceId, as production's
        record: the pair's key), and dropped."""
        shadow = current.shadow
        assert shadow is not None
        try:
            answer = await self._answer(shadow, current, body, content_type, accept)
        except _Refused:
            return  # the shadow is at capacity: production traffic never waits for it
        position = current.position(shadow.variant)
        ours, theirs = _best(answer), _best(production)
        if ours is not None and theirs is not None:
            self.metrics.count_variant(position, "shadow_compared")
            if ours[0] == theirs[0]:
                self.metrics.count_variant(position, "shadow_agreed")
        await self._capture(shadow.variant, body, content_type, answer, inference_id, event_id)

    # --- the control routes, for the local AWS's UpdateEndpoint ----------------------

    async def describe_routing(self, _request: web.Request) -> web.Response:
        current = routing.read(self.config.routing_dir())
        document = current.to_json()
        document["endpoint_name"] = self.config.endpoint_name
        document["applied_generation"] = metrics_text.applied_generation(self.all_slots)
        document["variants"] = {
            name: metrics_text.variant_counters(self.all_slots, position)
            for position, name in enumerate(current.positions)
        }
        return _json(200, document)

    async def replace_routing(self, request: web.Request) -> web.Response:
        """New routes, with each model downloaded and unpacked before they are published."""
        if (request.content_length or 0) > MAX_CONTROL_BYTES:
            return container_error(413, f"the routing is over {MAX_CONTROL_BYTES} bytes")
        model_dirs: list[str] = []
        try:
            document = json.loads(await request.content.read(MAX_CONTROL_BYTES + 1))
            routes, shadow = await asyncio.to_thread(self._downloaded_routes, document)
            every_route = [*routes, *([shadow] if shadow else [])]
            model_dirs = [route.model_dir for route in every_route]
            await self.variants.preload(every_route)  # each variant's container starts first
            published = await asyncio.to_thread(
                routing.replace, self.config.routing_dir(), routes, shadow, self.all_slots
            )
        except (ValueError, KeyError, TypeError) as error:
            self.variants.release(model_dirs)
            return container_error(400, f"bad routing: {error}")
        except ContainerFailed as error:
            self.variants.release(model_dirs)
            return container_error(400, str(error))
        except Exception as error:  # S3 refused, the archive is not a model, its code fails
            self.variants.release(model_dirs)
            return container_error(400, f"the routing's models cannot be loaded: {error}")
        return _json(200, published.to_json())

    def _downloaded_routes(
        self, document: object
    ) -> tuple[list[routing.Route], routing.Route | None]:
        if not isinstance(document, dict) or not isinstance(document.get("routes"), list):
            raise ValueError("expected {'routes': [...], 'shadow': {...} or null}")

        def downloaded(item: object) -> dict[str, object]:
            if not isinstance(item, dict) or not isinstance(item.get("model_data"), str):
                raise ValueError("each route needs variant, model_data (s3://) and weight")
            model_dir = routing.download_model(self.config.routing_dir(), item["model_data"])
            return {**item, "model_dir": str(model_dir), "model_data": None}

        # Checked as a whole: a weight-0 route is served (TargetVariant) beside others.
        routes = [downloaded(item) for item in document["routes"][: routing.MAX_ROUTES + 1]]
        shadow_document = document.get("shadow")
        shadow = downloaded(shadow_document) if shadow_document is not None else None
        parsed = routing.parse({"routes": routes, "shadow": shadow})
        return list(parsed.routes), parsed.shadow

    def _sampled(self, variant: str) -> bool:
        if self.config.capture_sampling <= 0 or self.capture(variant) is None:
            return False
        return random.uniform(0, 100) < self.config.capture_sampling


def custom_attributes_header(answer: Answer) -> dict[str, str]:
    """The model's custom attributes, forwarded verbatim as SageMaker forwards them
    (InvokeEndpoint's CustomAttributes: at most 1024 visible US-ASCII characters); a
    value outside those rules is left out and logged, and none is sent when empty."""
    value = answer.custom_attributes
    if not value:
        return {}
    if len(value) > MAX_CUSTOM_ATTRIBUTES_LENGTH or not all(
        " " <= character <= "~" for character in value
    ):
        log.error("the model's custom attributes break SageMaker's rules: %.80r", value)
        return {}
    return {CUSTOM_ATTRIBUTES_HEADER: value}


def _probabilities(answer: Answer) -> list[float] | None:
    """An answer's probabilities; None if it is no list of them (another Accept type, an
    error)."""
    if answer.status != 200 or not answer.content_type.startswith("application/json"):
        return None
    try:
        probabilities = [float(value) for value in json.loads(answer.body)]
    except (ValueError, TypeError):
        return None
    return probabilities or None


def _best(answer: Answer) -> tuple[int, float] | None:
    """(class index, probability) of an answer's best class; None if it is no list of
    probabilities."""
    probabilities = _probabilities(answer)
    if probabilities is None:
        return None
    best = max(range(len(probabilities)), key=lambda index: probabilities[index])
    return best, probabilities[best]
