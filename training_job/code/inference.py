"""The SageMaker inference script: image bytes in, class probabilities (JSON) out.

The model server (serve.py, the serving image's entrypoint; the local endpoint runs it
too) imports this file from `code/` in model.tar.gz and calls the four functions of the
contract: `model_fn` once, then `input_fn`, `predict_fn` and `output_fn` per request,
with `predict_fn` given a list of images to run a micro-batch.

Each answer's familiarity (familiarity.py) travels beside the body, never in it: the body
stays the JSON list of probabilities, and `custom_attributes_fn(prediction)` gives the
value of the response's `X-Amzn-SageMaker-Custom-Attributes` header (contract/
familiarity.py), which the model server sets after `output_fn` (serve.py). A model
without familiarity statistics gives "".

Bad input raises `InferenceError`, which carries an HTTP status: the server answers it
with that status (any other exception becomes a 500). The body reaches `input_fn` as
bytes, whatever its content type says. The accepted image formats are
`contract.images`, which travels inside `code/` (the training estimator's
`dependencies`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import familiarity as familiarity_lib
import imaging
import model as classifier
import numpy as np
import torch

from contract import familiarity as familiarity_attributes
from contract import images as image_formats

JSON_CONTENT_TYPE = "application/json"
SHOWN_HEADER_CHARS = 80  # a header echoed in an error is cut to this


class InferenceError(Exception):
    """A request this endpoint refuses, with the HTTP status the caller should get (the
    server reads `status_code` and `message`)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message

    def __str__(self) -> str:
        return str(self.message)


class LoadedModel(NamedTuple):
    network: classifier.Net | classifier.ServingNet
    config: classifier.ModelConfig
    familiarity: familiarity_lib.Familiarity | None = None  # None: a version without it


class Prediction(list[float]):
    """One image's class probabilities (a plain list to `output_fn` and json), with the
    custom attributes that travel beside them ("" when the model has no familiarity)."""

    custom_attributes: str = ""


def model_fn(model_dir: str) -> LoadedModel:
    """The model directory's network as served: its members folded into one network
    (`model.for_serving`: the same answers, less CPU per image). The familiarity check's
    features come from that network's own pass (`forward_with_features`), so the trained
    net is not kept beside it."""
    net, config = classifier.load_model(Path(model_dir))
    return LoadedModel(classifier.for_serving(net), config, familiarity_lib.load(Path(model_dir)))


def media_type(content_type: str | None) -> str:
    """`image/PNG; charset=x` -> `image/png` (parameters and case do not matter)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def shown(header: str | None) -> str:
    """A header value for an error message: quoted, and cut short when long."""
    text = header or ""
    if len(text) > SHOWN_HEADER_CHARS:
        text = text[:SHOWN_HEADER_CHARS] + "..."
    return repr(text)


def input_fn(request_body: bytes | bytearray, content_type: str | None) -> np.ndarray:
    """Image bytes of any size and mode to the uint8 (32, 32, 3) array training used."""
    declared = media_type(content_type)
    if declared not in image_formats.CONTENT_TYPES:
        raise InferenceError(
            415,
            f"unsupported content type {shown(content_type)}: send one of "
            + ", ".join(image_formats.CONTENT_TYPES),
        )
    body = bytes(request_body)
    if not body:
        raise InferenceError(400, "empty body: expected image bytes")
    actual = image_formats.content_type_of(body)
    if actual is None:
        raise InferenceError(415, f"the body is not a {image_formats.FORMAT_NAMES} image")
    if declared != image_formats.GENERIC_CONTENT_TYPE and declared != actual:
        raise InferenceError(
            415, f"the body is {actual} but the content type says {declared}: send {actual}"
        )
    try:
        return imaging.decode(body)
    except imaging.ImageTooLarge as error:
        raise InferenceError(413, str(error)) from error
    except imaging.ImageDecodeError as error:
        raise InferenceError(400, str(error)) from error


def predict_fn(
    data: np.ndarray | list[np.ndarray], model: LoadedModel
) -> list[float] | list[list[float]]:
    """Class probabilities in label order: one list for one image, a list of lists for a
    batch (a list of images, or an (N, 32, 32, 3) array)."""
    single = isinstance(data, np.ndarray) and data.ndim == 3
    images = np.stack([data]) if single else np.stack(list(data))
    batch = classifier.to_tensor(images, model.config)
    with torch.inference_mode():
        if model.familiarity is None:
            logits, first_group_means = model.network(batch), None
        else:
            logits, first_group_means = model.network.forward_with_features(batch)
        predictions = [Prediction(row) for row in torch.softmax(logits, dim=1).tolist()]
    if model.familiarity is not None and first_group_means is not None:
        distances = model.familiarity.distances_of(familiarity_lib.as_features(first_group_means))
        scores = model.familiarity.scores(distances)
        for prediction, score, familiar in zip(
            predictions, scores, model.familiarity.familiar(distances), strict=True
        ):
            prediction.custom_attributes = familiarity_attributes.format_attributes(
                float(score), bool(familiar)
            )
    return predictions[0] if single else predictions  # type: ignore[return-value]


def custom_attributes_fn(prediction: list[float]) -> str:
    """The `X-Amzn-SageMaker-Custom-Attributes` value of an answer ("" for none)."""
    return getattr(prediction, "custom_attributes", "")


def accepts_json(accept: str | None) -> bool:
    """Whether an Accept header admits JSON, read as HTTP defines it (RFC 9110 12.5.1): a
    list of media ranges with optional `q` weights; the most specific range that matches
    application/json sets its weight, and a weight of 0 means "not acceptable". No
    header, or an empty one, accepts anything."""
    if accept is None or not accept.strip():
        return True
    json_type, json_subtype = JSON_CONTENT_TYPE.split("/")
    best: tuple[int, float] | None = None  # (specificity, weight) of the best match
    for element in accept.split(","):
        media_range, *parameters = element.split(";")
        kind, _, subtype = media_range.strip().lower().partition("/")
        if (kind, subtype) == (json_type, json_subtype):
            specificity = 2
        elif (kind, subtype) == (json_type, "*"):
            specificity = 1
        elif (kind, subtype) == ("*", "*"):
            specificity = 0
        else:
            continue
        weight = _weight(parameters)
        if weight is not None and (best is None or specificity > best[0]):
            best = (specificity, weight)
    return best is not None and best[1] > 0


def _weight(parameters: list[str]) -> float | None:
    """The `q` of a media range's parameters (1 when absent), None when malformed."""
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value.strip())
            except ValueError:
                return None
            return weight if 0 <= weight <= 1 else None  # NaN fails both comparisons
    return 1.0


def output_fn(prediction: list[float], accept: str | None) -> tuple[str, str]:
    """The JSON list of probabilities, e.g. `[0.973, 0.027]`, and its content type."""
    if not accepts_json(accept):
        raise InferenceError(
            406, f"cannot answer Accept {shown(accept)}: this endpoint answers {JSON_CONTENT_TYPE}"
        )
    return json.dumps(prediction), JSON_CONTENT_TYPE
