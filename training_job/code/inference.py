"""The SageMaker inference script: image bytes in, class probabilities (JSON) out.

SageMaker's PyTorch serving container imports this file from `code/` in model.tar.gz and
calls the four functions of its contract in order: `model_fn` once, then `input_fn`,
`predict_fn` and `output_fn` per request. The local endpoint (local_aws/endpoint) calls
the same four functions, passing a list of images to `predict_fn` to run a micro-batch.

Bad input raises `InferenceError` with an HTTP status: the container's inference
toolkit answers a `BaseInferenceToolkitError` with that status (any other exception
becomes a 500), and the local endpoint reads `status_code` the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import imaging
import model as classifier
import numpy as np
import torch

try:  # present in SageMaker's serving containers, not needed here
    from sagemaker_inference.errors import GenericInferenceToolkitError as _ToolkitError
except ImportError:

    class _ToolkitError(Exception):  # type: ignore[no-redef]
        """The toolkit's error signature, for when the toolkit is not installed."""

        def __init__(self, status_code: int, message: str | None = None, phrase: str | None = None):
            self.status_code = status_code
            self.message = message or "Invalid Request"
            self.phrase = phrase or self.message
            super().__init__(status_code, self.message, self.phrase)


JSON_CONTENT_TYPE = "application/json"
IMAGE_CONTENT_TYPES = ("image/png", "image/jpeg", "application/x-image")


class InferenceError(_ToolkitError):
    """A request this endpoint refuses, with the HTTP status the caller should get."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(status_code, message, message)

    def __str__(self) -> str:
        return str(self.message)


class LoadedModel(NamedTuple):
    network: torch.nn.Module
    config: dict[str, Any]


def model_fn(model_dir: str) -> LoadedModel:
    net, config = classifier.load_model(Path(model_dir))
    return LoadedModel(net, config)


def media_type(content_type: str | None) -> str:
    """`image/PNG; charset=x` -> `image/png` (parameters and case do not matter)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def input_fn(request_body: bytes | bytearray, content_type: str | None) -> np.ndarray:
    """Image bytes of any size and mode to the uint8 (32, 32, 3) array training used."""
    if media_type(content_type) not in IMAGE_CONTENT_TYPES:
        raise InferenceError(
            415,
            f"unsupported content type {content_type!r}: send one of "
            + ", ".join(IMAGE_CONTENT_TYPES),
        )
    try:
        return imaging.decode(bytes(request_body))
    except imaging.ImageDecodeError as error:
        raise InferenceError(400, str(error)) from error


def predict_fn(
    data: np.ndarray | list[np.ndarray], model: LoadedModel
) -> list[float] | list[list[float]]:
    """Class probabilities in label order: one list for one image, a list of lists for a
    batch (a list of images, or an (N, 32, 32, 3) array)."""
    single = isinstance(data, np.ndarray) and data.ndim == 3
    images = np.stack([data]) if single else np.stack(list(data))
    with torch.inference_mode():
        logits = model.network(classifier.to_tensor(images, model.config))
        probabilities = torch.softmax(logits, dim=1).tolist()
    return probabilities[0] if single else probabilities


def output_fn(prediction: list[float], accept: str | None) -> tuple[str, str]:
    """The JSON list of probabilities, e.g. `[0.973, 0.027]`, and its content type."""
    if media_type(accept) not in ("", "*/*", JSON_CONTENT_TYPE):
        raise InferenceError(406, f"unsupported accept type {accept!r}: use {JSON_CONTENT_TYPE}")
    return json.dumps(prediction), JSON_CONTENT_TYPE
