"""contract.s3: the one parser of s3:// URIs and the one prefix rule, for every command
(stage, train, deploy, evaluate, monitor) and the local training runner."""

from __future__ import annotations

import pytest

from contract.s3 import (
    MAX_PREFIX_CHARS,
    S3UriError,
    normalise_prefix,
    parse_s3_object_uri,
    parse_s3_prefix_uri,
    parse_s3_uri,
)


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/train.lst", ("bucket", "train.lst")),
        ("s3://bucket/data_capture/ep/", ("bucket", "data_capture/ep/")),
        # A key prefix as written, ending mid-name (a SageMaker channel's S3Prefix).
        (
            "s3://bucket/data_capture/ep/AllTraffic/2026/11/24/09/10-",
            ("bucket", "data_capture/ep/AllTraffic/2026/11/24/09/10-"),
        ),
        ("s3://my.old.bucket/x", ("my.old.bucket", "x")),  # older buckets have dots
    ],
)
def test_a_uri_is_its_bucket_and_the_rest_as_written(uri: str, parsed: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == parsed


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("bucket/test/", "not an s3:// URI"),
        ("/tmp/out", "not an s3:// URI"),
        ("S3://bucket/x", "not an s3:// URI"),
        ("s3://", "invalid bucket name ''"),
        ("s3:///key", "invalid bucket name ''"),
        # Accepted by the local runner's and the monitor's copies, refused by the others:
        # no such bucket can exist.
        ("s3://b/x", "invalid bucket name 'b'"),
        ("s3://Bucket/x", "invalid bucket name 'Bucket'"),
        ("s3://bucket-/x", "invalid bucket name"),
        ("s3://a..b/x", "invalid bucket name"),
        ("s3://" + "b" * 64 + "/x", "invalid bucket name"),
        ("s3://" + "b" * 100_000 + "/x", r"\(100000 characters\)"),  # echoed bounded
    ],
)
def test_anything_else_is_refused_naming_what(uri: str, message: str) -> None:
    with pytest.raises(S3UriError, match=message):
        parse_s3_uri(uri)


def test_an_object_uri_names_a_key() -> None:
    assert parse_s3_object_uri("s3://bucket/models/j/output/model.tar.gz") == (
        "bucket",
        "models/j/output/model.tar.gz",
    )
    # deploy's copy took "s3://bucket/models/" as an object; evaluate's refused it.
    for uri in ("s3://bucket", "s3://bucket/", "s3://bucket/models/"):
        with pytest.raises(S3UriError, match="expected s3://BUCKET/KEY"):
            parse_s3_object_uri(uri)


@pytest.mark.parametrize(
    ("prefix", "normalised"),
    [
        ("", ""),
        ("cifar", "cifar/"),
        ("cifar/", "cifar/"),
        ("runs/a.1/b_2-c", "runs/a.1/b_2-c/"),
        ("x" * (MAX_PREFIX_CHARS - 1), "x" * (MAX_PREFIX_CHARS - 1) + "/"),
    ],
)
def test_a_prefix_gets_one_trailing_slash(prefix: str, normalised: str) -> None:
    assert normalise_prefix(prefix) == normalised


@pytest.mark.parametrize(
    "prefix",
    [
        # train's copy stripped these to "abs/" and "a/b/"; stage's refused them. Refused:
        # a prefix is written as its keys begin.
        "/abs",
        "/abs/",
        "a//b",
        # train's copy accepted these, which stage can never have written.
        "a b",
        "bad\nprefix",
        "../up",
        "a/./b",
        "x" * MAX_PREFIX_CHARS,
        "/",
    ],
)
def test_a_prefix_breaking_the_rule_is_refused_saying_the_rule(prefix: str) -> None:
    with pytest.raises(S3UriError, match="a prefix is parts of letters, digits"):
        normalise_prefix(prefix)


def test_a_prefix_uri_is_normalised_by_the_same_rule() -> None:
    assert parse_s3_prefix_uri("s3://bucket") == ("bucket", "")
    assert parse_s3_prefix_uri("s3://bucket/test") == ("bucket", "test/")
    assert parse_s3_prefix_uri("s3://bucket/test/") == ("bucket", "test/")
    with pytest.raises(S3UriError, match=r"in 's3://bucket/a//b'"):
        parse_s3_prefix_uri("s3://bucket/a//b")
