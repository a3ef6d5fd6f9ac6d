"""serialize against the local AWS: real objects in a real (emulated) S3 bucket."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from contract.images import MAX_IMAGE_BYTES
from handlers import image_source, serialize
from handlers.errors import (
    ConfigurationError,
    ImageTooLarge,
    InvalidEvent,
    NotAnImage,
    WorkflowError,
)
from handlers.image_source import (
    BucketNotAllowed,
    ImageChanged,
    ImageNotFound,
    KeyNotAllowed,
    object_size,
)
from handlers.workflow_event import INLINE_IMAGE_BYTES
from tests.handlers.conftest import LambdaContext, encode_noise

REPO_ROOT = Path(__file__).resolve().parents[2]


def put(bucket: str, key: str, body: bytes) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)


def event(bucket: str, key: str) -> dict[str, object]:
    return {"image_data": "", "s3_bucket": bucket, "s3_key": key, "inferences": []}


def test_an_image_under_test_is_returned_base64_encoded(
    data_bucket: str,
    png_image: bytes,
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    put(data_bucket, "test/bike_s_000001.png", png_image)
    result = serialize.handler(event(data_bucket, "test/bike_s_000001.png"), lambda_context)
    assert result["statusCode"] == 200
    assert result["body"] == {
        "image_data": base64.b64encode(png_image).decode(),
        "s3_bucket": data_bucket,
        "s3_key": "test/bike_s_000001.png",
        "inferences": [],
        "s3_etag": hashlib.md5(png_image).hexdigest(),  # the upload read: the decision's id
    }
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert record["request_id"] == lambda_context.aws_request_id
    assert record["s3_key"] == "test/bike_s_000001.png"


@pytest.mark.parametrize("prefix", ["train/", "incoming/"])
def test_every_allowed_prefix_is_served(data_bucket: str, jpeg_image: bytes, prefix: str) -> None:
    put(data_bucket, f"{prefix}photo.jpg", jpeg_image)
    body = serialize.handler(event(data_bucket, f"{prefix}photo.jpg"))["body"]
    assert base64.b64decode(body["image_data"]) == jpeg_image


def test_the_upload_the_event_names_is_read_and_a_later_one_is_image_changed(
    data_bucket: str, png_image: bytes, jpeg_image: bytes
) -> None:
    """A photo uploaded over an earlier one under the same key is decided on its own
    (issue 21, item 6): the run of the earlier upload reads only its own bytes (GetObject
    If-Match its ETag; S3 API reference, GetObject: "Return the object only if its entity
    tag (ETag) is the same as the one specified; otherwise, return a 412 (precondition
    failed) error"), so it never decides the later photo under the earlier one's id."""
    put(data_bucket, "incoming/same.png", png_image)
    first = hashlib.md5(png_image).hexdigest()
    body = serialize.handler({**event(data_bucket, "incoming/same.png"), "s3_etag": first})["body"]
    assert (body["s3_etag"], base64.b64decode(body["image_data"])) == (first, png_image)
    put(data_bucket, "incoming/same.png", jpeg_image)
    with pytest.raises(ImageChanged, match=f"no longer the upload with ETag {first}"):
        serialize.handler({**event(data_bucket, "incoming/same.png"), "s3_etag": first})
    second = serialize.handler(event(data_bucket, "incoming/same.png"))["body"]
    assert second["s3_etag"] == hashlib.md5(jpeg_image).hexdigest()


def test_an_s3_etag_that_is_not_an_etag_is_an_invalid_event(data_bucket: str) -> None:
    with pytest.raises(InvalidEvent, match="s3_etag 'x' is not an S3 ETag"):
        serialize.handler({**event(data_bucket, "incoming/a.png"), "s3_etag": "x"})


def test_a_previous_return_value_is_accepted_as_the_event(
    data_bucket: str, png_image: bytes
) -> None:
    put(data_bucket, "incoming/a.png", png_image)
    chained = {"statusCode": 200, "body": event(data_bucket, "incoming/a.png")}
    assert serialize.handler(chained)["body"]["image_data"] == base64.b64encode(png_image).decode()


def test_another_bucket_is_not_served(data_bucket: str, unique_name: str, png_image: bytes) -> None:
    other = f"{unique_name}-other"
    boto3.client("s3").create_bucket(Bucket=other)
    put(other, "test/a.png", png_image)
    with pytest.raises(BucketNotAllowed, match=other):
        serialize.handler(event(other, "test/a.png"))


@pytest.mark.parametrize(
    "key", ["models/model.tar.gz", "test.lst", "test/", "Test/a.png", "/test/a.png", "x/test/a.png"]
)
def test_keys_outside_the_allowed_prefixes_are_not_served(
    data_bucket: str, png_image: bytes, key: str
) -> None:
    put(data_bucket, key.lstrip("/") or "x", png_image)
    with pytest.raises(KeyNotAllowed):
        serialize.handler(event(data_bucket, key))


def test_allowed_prefixes_come_from_the_environment(
    data_bucket: str, png_image: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(data_bucket, "test/a.png", png_image)
    monkeypatch.setenv("ALLOWED_PREFIXES", "incoming/")
    with pytest.raises(KeyNotAllowed, match="incoming/"):
        serialize.handler(event(data_bucket, "test/a.png"))
    monkeypatch.setenv("ALLOWED_PREFIXES", " , ")
    with pytest.raises(ConfigurationError, match="ALLOWED_PREFIXES"):
        serialize.handler(event(data_bucket, "test/a.png"))


def test_a_missing_key_is_image_not_found(data_bucket: str) -> None:
    with pytest.raises(ImageNotFound, match=r"test/nothing\.png"):
        serialize.handler(event(data_bucket, "test/nothing.png"))


def test_an_empty_key_is_an_invalid_event(data_bucket: str) -> None:
    with pytest.raises(InvalidEvent, match="s3_key"):
        serialize.handler(event(data_bucket, ""))


def test_an_object_over_the_limit_is_refused_before_download(
    data_bucket: str, png_image: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_IMAGE_BYTES", str(len(png_image) - 1))
    put(data_bucket, "test/big.png", png_image)
    with pytest.raises(ImageTooLarge, match=str(len(png_image))):
        serialize.handler(event(data_bucket, "test/big.png"))
    monkeypatch.setenv("MAX_IMAGE_BYTES", str(len(png_image)))
    assert serialize.handler(event(data_bucket, "test/big.png"))["statusCode"] == 200


def test_the_default_limit_is_5_mb(data_bucket: str, png_image: bytes) -> None:
    put(data_bucket, "test/huge.png", png_image + bytes(5 * 1024 * 1024))
    with pytest.raises(ImageTooLarge, match="5242880"):
        serialize.handler(event(data_bucket, "test/huge.png"))


@pytest.mark.parametrize(
    "body",
    [b"", b"not an image at all", b"%PDF-1.4\n", b"<html><script>alert(1)</script></html>"],
)
def test_an_object_that_is_not_an_image_is_refused(data_bucket: str, body: bytes) -> None:
    put(data_bucket, "incoming/upload.png", body)
    with pytest.raises(NotAnImage, match=r"incoming/upload\.png"):
        serialize.handler(event(data_bucket, "incoming/upload.png"))


def test_without_data_bucket_nothing_is_served(
    data_bucket: str, png_image: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(data_bucket, "test/a.png", png_image)
    monkeypatch.delenv("DATA_BUCKET")
    with pytest.raises(ConfigurationError, match="DATA_BUCKET"):
        serialize.handler(event(data_bucket, "test/a.png"))


@pytest.mark.parametrize("hostile", [["a"], "test/a.png", None, {"s3_key": {"$ne": ""}}])
def test_hostile_events_are_invalid_events(data_bucket: str, hostile: object) -> None:
    with pytest.raises(InvalidEvent):
        serialize.handler(hostile)


def test_an_image_over_the_inline_budget_stays_in_s3_and_the_event_refers_to_it(
    data_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    image = encode_noise("PNG", (256, 256))  # ~197 KB: fits Lambda, not a 256 KiB state
    assert INLINE_IMAGE_BYTES < len(image) <= MAX_IMAGE_BYTES
    key = "incoming/" + "k" * 1000 + ".png"  # the longest key S3 allows, nearly
    put(data_bucket, key, image)
    result = serialize.handler(event(data_bucket, key))
    # image_data stays empty; the reference names the upload read, by its ETag
    assert result["body"] == {**event(data_bucket, key), "s3_etag": hashlib.md5(image).hexdigest()}
    assert len(json.dumps(result)) < 4096
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert record["bytes"] == len(image)
    assert record["content_type"] == "image/png"


def test_an_image_at_the_inline_budget_is_inlined_and_the_state_stays_under_256_kib(
    data_bucket: str,
) -> None:
    image = encode_noise("PNG", (180, 180))
    image += b"\x00" * (INLINE_IMAGE_BYTES - len(image))  # after IEND: still a PNG
    key = "incoming/" + "k" * 1000 + ".png"
    put(data_bucket, key, image)
    result = serialize.handler(event(data_bucket, key))
    assert base64.b64decode(result["body"]["image_data"]) == image
    # What Step Functions holds: Lambda's invoke result around the handler's return value.
    task_result = {"ExecutedVersion": "$LATEST", "Payload": result, "StatusCode": 200}
    assert len(json.dumps(task_result).encode()) < 256 * 1024 * 3 // 4


def test_a_large_object_that_is_not_an_image_is_refused(data_bucket: str) -> None:
    put(data_bucket, "incoming/large.png", b"GIF89a" + bytes(INLINE_IMAGE_BYTES * 2))
    with pytest.raises(NotAnImage, match="PNG or JPEG"):
        serialize.handler(event(data_bucket, "incoming/large.png"))


def test_an_error_repeats_no_more_than_a_bounded_part_of_a_hostile_name(
    data_bucket: str,
) -> None:
    with pytest.raises(BucketNotAllowed) as raised:
        serialize.handler(event("b" * 100_000, "test/a.png"))
    assert len(str(raised.value)) < 400
    with pytest.raises(KeyNotAllowed) as raised:
        serialize.handler(event(data_bucket, "x" * 1024))
    assert len(str(raised.value)) < 400


def test_importing_the_handler_does_not_import_botocore() -> None:
    # botocore is ~100 ms of import; it loads on the first invocation, not at import.
    code = "import sys, handlers.serialize; print('botocore' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize(
    ("answer", "size"),
    [
        ({"ContentRange": "bytes 0-98303/2500000", "ContentLength": 98304}, 2_500_000),
        ({"ContentRange": "bytes 0-2047/2048", "ContentLength": 2048}, 2048),
        ({"ContentLength": 2048}, 2048),  # a whole-object answer: no Content-Range
    ],
)
def test_the_object_size_is_the_content_ranges_total(answer: dict[str, object], size: int) -> None:
    assert object_size(answer, "s3://b/k") == size


@pytest.mark.parametrize("content_range", ["bytes 0-9/*", "bytes 0-9/-5", "bytes 0-9/1e9"])
def test_an_unusable_content_range_is_a_workflow_error(content_range: str) -> None:
    with pytest.raises(WorkflowError, match="Content-Range"):
        object_size({"ContentRange": content_range, "ContentLength": 10}, "s3://b/k")


def test_a_large_image_costs_one_ranged_request_of_at_most_the_inline_budget(
    data_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size check and the read are one GetObject: what S3 sends is bounded by the
    range, whatever the object's size."""
    put(data_bucket, "incoming/photo.jpg", b"\xff\xd8\xff\xe0" + bytes(INLINE_IMAGE_BYTES * 3))
    calls: list[tuple[str, dict[str, object]]] = []
    original = image_source.aws_client

    def recording_client(service: str, **config: object) -> object:
        client = original(service, **config)
        client.meta.events.register(
            "provide-client-params.s3.*",
            lambda params, model, **_: calls.append((model.name, dict(params))),
        )
        return client

    monkeypatch.setattr(image_source, "aws_client", recording_client)
    result = serialize.handler(event(data_bucket, "incoming/photo.jpg"))
    assert result["body"]["image_data"] == ""
    assert [name for name, _ in calls] == ["GetObject"]
    assert calls[0][1]["Range"] == f"bytes=0-{INLINE_IMAGE_BYTES - 1}"
