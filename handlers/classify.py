"""classify: send the event's image to the SageMaker endpoint, return its probabilities.

The image is the event's `image_data` when serialize put it there, else the object at
`s3_bucket`/`s3_key`, read under the same rules as serialize reads it
(handlers/image_source.py). The endpoint is named by ENDPOINT_NAME and called through
botocore's `sagemaker-runtime` client (not the SageMaker SDK, which would cost seconds of
cold start and megabytes of package). The client is created on the first call and kept
for the container's life. The event it returns names what answered: the endpoint, the
production variant that answered (InvokeEndpoint's InvokedProductionVariant, named after
the model version it serves) and when, so the photo's decision says which model made it.

Each call passes an InferenceId (the Lambda request id), which data capture records as
eventMetadata.inferenceId for the production answer and the shadow's copy alike, so
`monitor versions` pairs them exactly. Each answer is also published as the variant's
answer metrics (contract/variant_metrics.py: doubtful share, confidence, class mix) in
CloudWatch's embedded metric format: one JSON log line that CloudWatch Logs turns into
metrics, no PutMetricData call and no permission for one. The rollout's canary alarms
judge the new version's answers on them.

Timeouts and retries: one attempt per invocation, with timeouts that end it well inside
the function's 30 s (ENDPOINT_CLIENT_CONFIG). Transient endpoint errors (throttling, a
model not ready, 5xx, no connection) are raised as EndpointUnavailable, which the state
machine's Classify state retries with backoff. That is the one layer that retries: the
waits cost no Lambda time, are not squeezed into the function's timeout, and show in the
execution history. botocore's own retries would be a second layer under it (3 state
attempts x 3 client attempts = 9 calls to a struggling endpoint), so they are off.

The model's familiarity score (is the photo like the ones it was trained on?) travels in
the answer's CustomAttributes (contract/familiarity.py), not in the body, which stays the
list of probabilities; classify adds it to the event as `familiarity` and `familiar`. A
model version that sends none leaves both out: familiarity unknown, routed as before.

An image the model cannot read (the container answers 400, 413 or 415, which SageMaker
returns as ModelError with that OriginalStatusCode) is the upload's fault, not the
endpoint's: NotAnImage or ImageTooLarge, as serialize names them, never EndpointError.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

from contract import shown, variant_metrics
from contract.familiarity import FamiliarityAttributeError, parse_attributes
from contract.sagemaker_names import NAME_PATTERN
from contract.threshold import ThresholdError, threshold_from_environment
from handlers.aws_clients import aws_client
from handlers.errors import (
    ConfigurationError,
    ImageTooLarge,
    InvalidEvent,
    NotAnImage,
    WorkflowError,
)
from handlers.image_source import image_content_type, max_image_bytes, read_image
from handlers.json_log import log
from handlers.workflow_event import LABELS, WorkflowEvent, distribution_problem

# botocore's defaults (60 s to connect, 60 s per read, several attempts) outlast the
# function's 30 s timeout, so Lambda would kill a waiting handler with no named error. 2 s
# to connect and 12 s per read end a stalled call within 14 s, which leaves room for an S3
# read of the image (image_source.S3_CLIENT_CONFIG) before it; the model answers in well
# under a second (docs/benchmarks.md). One attempt: the state machine retries (see above).
ENDPOINT_CLIENT_CONFIG: dict[str, Any] = {
    "connect_timeout": 2,
    "read_timeout": 12,
    "retries": {"total_max_attempts": 1},
}

# SageMaker Runtime's error codes that mean "try again later" (InvokeEndpoint's API
# reference); any 429 or 5xx status counts too.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "ThrottlingException",
        "ModelNotReadyException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalDependencyException",
    }
)


# The model container's own statuses for an upload it cannot use (training_job/code/
# inference.py), which SageMaker passes on in ModelError's OriginalStatusCode: the bytes are
# the driver's problem, not the endpoint's (the state machine records them as rejected).
UPLOAD_REFUSALS: dict[int, type[WorkflowError]] = {
    400: NotAnImage,  # undecodable: a truncated or corrupt image
    413: ImageTooLarge,  # more pixels than the model decodes
    415: NotAnImage,  # not an accepted format
}


class EndpointError(WorkflowError):
    """The endpoint refused or failed the request; the message is the endpoint's."""


class EndpointUnavailable(WorkflowError):
    """A transient endpoint error (throttled, model not ready, 5xx, no connection): the
    state machine retries these."""


class EndpointTimeout(WorkflowError):
    """The endpoint took the request and sent no answer within the read timeout."""


class InvalidEndpointResponse(WorkflowError):
    """The endpoint answered something other than a distribution over the labels."""


def handler(event: object, context: object = None) -> dict[str, Any]:
    endpoint_name = configured_endpoint_name()
    threshold = configured_threshold()
    workflow_event = WorkflowEvent.parse(event)
    limit = max_image_bytes()
    if workflow_event.image_data:
        image = decode_image(workflow_event.image_data, limit)
        content_type = image_content_type(image, "image_data")
    else:
        # serialize left a large image in S3: read it by the event's reference.
        stored = read_image(
            workflow_event.s3_bucket, workflow_event.s3_key, limit, etag=workflow_event.s3_etag
        )
        image, content_type = stored.data, stored.content_type
    inference_id = getattr(context, "aws_request_id", None) or str(uuid.uuid4())
    answer = invoke(endpoint_name, image, content_type, inference_id)
    workflow_event.inferences, workflow_event.variant = answer.probabilities, answer.variant
    if answer.familiarity is not None:
        workflow_event.familiarity, workflow_event.familiar = answer.familiarity
    workflow_event.endpoint = endpoint_name
    workflow_event.decided_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    if workflow_event.variant:  # SageMaker always names it; without it there is no metric
        publish_answer_metrics(
            endpoint_name, workflow_event.variant, workflow_event.inferences, threshold
        )
    label, confidence = workflow_event.top_inference()
    log(
        "INFO",
        "image classified",
        context,
        s3_key=workflow_event.s3_key,
        bytes=len(image),
        label=label,
        confidence=confidence,
        endpoint=endpoint_name,
        variant=workflow_event.variant,
        inference_id=inference_id,
        familiarity=workflow_event.familiarity,
        familiar=workflow_event.familiar,
    )
    return workflow_event.response()


def publish_answer_metrics(
    endpoint_name: str, variant: str, probabilities: list[float], threshold: float
) -> None:
    """The answer's metrics as one embedded-metric-format line on stdout (the log)."""
    values = variant_metrics.answer_values(probabilities, LABELS, threshold)
    document = variant_metrics.emf_document(endpoint_name, variant, values)
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def configured_threshold() -> float:
    """THRESHOLD as the threshold filter reads it: "doubtful" means the same in both."""
    try:
        return threshold_from_environment(os.environ)
    except ThresholdError as error:
        raise ConfigurationError(str(error)) from None


def configured_endpoint_name() -> str:
    name = os.environ.get("ENDPOINT_NAME", "").strip()
    if not name:
        raise ConfigurationError("ENDPOINT_NAME is not set")
    if not NAME_PATTERN.match(name):
        raise ConfigurationError(f"ENDPOINT_NAME {shown(name)} is not a SageMaker endpoint name")
    return name


def decode_image(image_data: str, limit: int) -> bytes:
    # Checked before decoding, so a huge payload is refused without a second copy.
    if len(image_data) * 3 // 4 > limit + 2:
        raise ImageTooLarge(f"image_data decodes to more than the limit of {limit} bytes")
    try:
        image = base64.b64decode(image_data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEvent("image_data is not valid base64") from None
    if len(image) > limit:
        raise ImageTooLarge(f"the image is {len(image)} bytes; limit {limit}")
    return image


class EndpointAnswer(NamedTuple):
    probabilities: list[float]
    variant: str  # "" when unnamed
    familiarity: tuple[float, bool] | None  # (score, familiar); None when the model has none


def invoke(
    endpoint_name: str, image: bytes, content_type: str, inference_id: str, target_variant: str = ""
) -> EndpointAnswer:
    """The endpoint's probabilities for `image`, the name of the variant that answered and
    the model's familiarity; `inference_id` goes into the endpoint's captures of this
    request. With `target_variant` that variant answers (InvokeEndpoint's TargetVariant: a
    backfill's chosen version)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        ConnectTimeoutError,
        ReadTimeoutError,
    )

    try:
        response = aws_client("sagemaker-runtime", **ENDPOINT_CLIENT_CONFIG).invoke_endpoint(
            EndpointName=endpoint_name,
            ContentType=content_type,
            Accept="application/json",
            Body=image,
            InferenceId=inference_id,
            **({"TargetVariant": target_variant} if target_variant else {}),
        )
        payload = response["Body"].read()
        variant = str(response.get("InvokedProductionVariant") or "")
        custom_attributes = response.get("CustomAttributes")
    except ClientError as error:
        details = error.response.get("Error", {})
        code = details.get("Code", "Unknown")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = f"endpoint {endpoint_name}: {code}: {details.get('Message') or error}"
        if code in TRANSIENT_ERROR_CODES or status == 429 or status >= 500:
            raise EndpointUnavailable(message) from None
        refused_upload = UPLOAD_REFUSALS.get(int(error.response.get("OriginalStatusCode") or 0))
        if code == "ModelError" and refused_upload:
            raise refused_upload(f"the model could not read the image: {message}") from None
        raise EndpointError(message) from None
    except ReadTimeoutError:
        raise EndpointTimeout(
            f"endpoint {endpoint_name} sent no answer within "
            f"{ENDPOINT_CLIENT_CONFIG['read_timeout']} s"
        ) from None
    except (ConnectTimeoutError, ConnectionError) as error:
        # ConnectTimeoutError is a ConnectionError too: nothing reached the model.
        raise EndpointUnavailable(f"endpoint {endpoint_name}: {error}") from None
    except BotoCoreError as error:  # e.g. the answer broke off mid-body
        raise EndpointError(f"endpoint {endpoint_name}: {error}") from None
    # SageMaker always names the variant; an answer without it is recorded as unversioned.
    try:
        familiarity = parse_attributes(custom_attributes)
    except FamiliarityAttributeError as error:
        raise InvalidEndpointResponse(f"endpoint {endpoint_name}: {error}") from None
    return EndpointAnswer(parse_probabilities(payload), variant, familiarity)


def parse_probabilities(payload: bytes) -> list[float]:
    try:
        probabilities = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise InvalidEndpointResponse(
            f"the endpoint's answer is not JSON: {payload[:80]!r}"
        ) from None
    problem = (
        distribution_problem(probabilities)
        if isinstance(probabilities, list)
        else "must be a JSON list"
    )
    if problem:
        raise InvalidEndpointResponse(
            f"the endpoint's answer {payload[:80]!r} is not a distribution over the "
            f"labels: it {problem}"
        )
    return [float(value) for value in probabilities]
