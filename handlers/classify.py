"""classify: send the event's image to the SageMaker endpoint, return its probabilities.

The endpoint is named by ENDPOINT_NAME and called through botocore's `sagemaker-runtime`
client (not the SageMaker SDK, which would cost seconds of cold start and megabytes of
package). The client is created on the first call and kept for the container's life.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
from typing import Any

from handlers.workflow_event import (
    ConfigurationError,
    ImageTooLarge,
    InvalidEvent,
    NotAnImage,
    WorkflowError,
    WorkflowEvent,
    aws_client,
    image_content_type,
    log,
    max_image_bytes,
)

# SageMaker's own rule for endpoint names.
ENDPOINT_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class EndpointError(WorkflowError):
    """The endpoint refused or failed the request; the message is the endpoint's."""


class InvalidEndpointResponse(WorkflowError):
    """The endpoint answered something other than a JSON list of probabilities."""


def handler(event: object, context: object = None) -> dict[str, Any]:
    endpoint_name = configured_endpoint_name()
    workflow_event = WorkflowEvent.parse(event)
    image = decode_image(workflow_event.image_data, max_image_bytes())
    workflow_event.inferences = invoke(endpoint_name, image)
    label, confidence = workflow_event.top_inference()
    log(
        "INFO",
        "image classified",
        context,
        s3_key=workflow_event.s3_key,
        label=label,
        confidence=confidence,
        endpoint=endpoint_name,
    )
    return workflow_event.response()


def configured_endpoint_name() -> str:
    name = os.environ.get("ENDPOINT_NAME", "").strip()
    if not name:
        raise ConfigurationError("ENDPOINT_NAME is not set")
    if not ENDPOINT_NAME_PATTERN.match(name):
        raise ConfigurationError(f"ENDPOINT_NAME {name[:80]!r} is not a SageMaker endpoint name")
    return name


def decode_image(image_data: str, limit: int) -> bytes:
    if not image_data:
        raise InvalidEvent("the event has no image_data (run serialize first)")
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


def invoke(endpoint_name: str, image: bytes) -> list[float]:
    from botocore.exceptions import BotoCoreError, ClientError

    content_type = image_content_type(image)
    if content_type is None:
        raise NotAnImage("image_data is not a PNG, JPEG, GIF, BMP or WebP image")
    try:
        response = aws_client("sagemaker-runtime").invoke_endpoint(
            EndpointName=endpoint_name,
            ContentType=content_type,
            Accept="application/json",
            Body=image,
        )
        payload = response["Body"].read()
    except ClientError as error:
        details = error.response.get("Error", {})
        code = details.get("Code", "Unknown")
        message = details.get("Message") or str(error)
        raise EndpointError(f"endpoint {endpoint_name}: {code}: {message}") from None
    except BotoCoreError as error:
        raise EndpointError(f"endpoint {endpoint_name}: {error}") from None
    return parse_probabilities(payload)


def parse_probabilities(payload: bytes) -> list[float]:
    try:
        probabilities = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise InvalidEndpointResponse(
            f"the endpoint's answer is not JSON: {payload[:80]!r}"
        ) from None
    if (
        not isinstance(probabilities, list)
        or not probabilities
        or not all(
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and 0.0 <= value <= 1.0
            for value in probabilities
        )
    ):
        raise InvalidEndpointResponse(
            f"the endpoint's answer is not a list of probabilities: {payload[:80]!r}"
        )
    return [float(value) for value in probabilities]
