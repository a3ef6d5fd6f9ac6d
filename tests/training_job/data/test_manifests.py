"""`.lst` files (contract.manifest, the one reader) and `manifest.json`: round trips, and
malformed input refused by line/field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.manifest import (
    MAX_LST_BYTES,
    LstEntry,
    ManifestError,
    format_lst,
    parse_lst,
    read_lst,
)
from training_job.data.manifests import (
    Manifest,
    content_sha256,
    read_manifest,
    write_lst,
    write_manifest,
)

MANIFEST = Manifest(
    classes=("bicycle", "motorcycle"),
    counts={"train": {"bicycle": 2, "motorcycle": 1}, "test": {"bicycle": 0, "motorcycle": 1}},
    source="https://example.invalid/cifar.tar.gz",
    archive_sha256="a" * 64,
    content_sha256="b" * 64,
    objects=7,
)


def test_lst_round_trip(tmp_path: Path) -> None:
    entries = [LstEntry(16, 0, "bike_s_000682.png"), LstEntry(152, 1, "minibike_s_000824.png")]
    write_lst(tmp_path / "train.lst", entries)
    assert (tmp_path / "train.lst").read_text() == (
        "16\t0\tbike_s_000682.png\n152\t1\tminibike_s_000824.png\n"
    )
    assert read_lst(tmp_path / "train.lst") == entries
    assert [path.name for path in tmp_path.iterdir()] == ["train.lst"]  # no temporary left


def test_shared_lst_files_parse(shared_data: Path) -> None:
    train = read_lst(shared_data / "train.lst")
    assert len(train) == 1000
    assert train[0] == LstEntry(16, 0, "bike_s_000682.png")
    assert format_lst(train) == (shared_data / "train.lst").read_text()


def test_empty_lst_is_empty() -> None:
    assert parse_lst("") == []


@pytest.mark.parametrize("text", ["1\t1\ta.png", "1\t1\ta.png\n", "1\t1\ta.png\r\n"])
def test_last_line_may_end_in_a_newline_or_not(text: str) -> None:
    assert parse_lst(text) == [LstEntry(1, 1, "a.png")]


def test_integral_float_labels_are_read_as_their_integer() -> None:
    # MXNet's im2rec (the SageMaker reference) writes labels as floats; train.py's reader
    # accepted them and this one refused them. Written back, they are integers.
    text = "16\t0.000000\tbike_s_000682.png\n152\t1.000000\tminibike_s_000824.png\n"
    entries = parse_lst(text)
    assert entries == [
        LstEntry(16, 0, "bike_s_000682.png"),
        LstEntry(152, 1, "minibike_s_000824.png"),
    ]
    assert format_lst(entries) == "16\t0\tbike_s_000682.png\n152\t1\tminibike_s_000824.png\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16\t0\n", "line 1: expected 3 tab-separated fields"),
        ("16 0 a.png\n", "line 1: expected 3"),
        ("1\t0\ta.png\nx\t0\tb.png\n", "line 2: row and label must be non-negative integers"),
        ("1\t-1\ta.png\n", "row and label must be non-negative integers"),
        ("1\t٣\ta.png\n", "row and label must be non-negative integers"),
        # A float label must be integral: 1.5 names no class.
        ("1\t1.5\ta.png\n", "line 1: row and label must be non-negative integers"),
        ("1\t1.\ta.png\n", "row and label must be non-negative integers"),
        ("1\t1e0\ta.png\n", "row and label must be non-negative integers"),
        ("1\tnan\ta.png\n", "row and label must be non-negative integers"),
        ("1.0\t1\ta.png\n", "row and label must be non-negative integers"),
        # Blank lines were skipped by train.py's own reader and refused here; refused now
        # by every reader, including a second newline at the end.
        ("1\t0\ta.png\n\n2\t0\tb.png\n", "line 2: blank line"),
        ("1\t0\ta.png\n \t\n", "line 2: blank line"),
        ("1\t0\ta.png\n\n", "line 2: blank line"),
        ("1\t0\t../../etc/passwd\n", "unsafe or empty filename"),
        ("1\t0\t/abs.png\n", "unsafe or empty filename"),
        ("1\t0\t\n", "unsafe or empty filename"),
        ("1\t0\ta.png\n2\t0\ta.png\n", "line 2: duplicate filename 'a.png'"),
        ("1\t0\ta.png\t\n", "expected 3 tab-separated fields"),
    ],
)
def test_malformed_lst_is_refused_by_line(text: str, expected: str) -> None:
    with pytest.raises(ManifestError, match=expected.replace("(", r"\(")):
        parse_lst(text)


def test_oversized_lst_is_refused() -> None:
    with pytest.raises(ManifestError, match="over"):
        parse_lst("1\t0\ta.png\n" * 7_000_000)


def test_oversized_lst_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.lst"
    with path.open("wb") as file:
        file.truncate(MAX_LST_BYTES + 1)  # sparse: the size is what is checked
    with pytest.raises(ManifestError, match="over"):
        read_lst(path)


def test_non_utf8_lst_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.lst").write_bytes(b"1\t0\t\xff.png\n")
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_lst(tmp_path / "x.lst")


def test_unsafe_entry_is_not_written(tmp_path: Path) -> None:
    with pytest.raises(ManifestError):
        write_lst(tmp_path / "x.lst", [LstEntry(0, 0, "../x.png")])
    assert list(tmp_path.iterdir()) == []


def test_manifest_round_trip(tmp_path: Path) -> None:
    write_manifest(tmp_path / "manifest.json", MANIFEST)
    assert read_manifest(tmp_path / "manifest.json") == MANIFEST
    document = json.loads((tmp_path / "manifest.json").read_text())
    assert document["format"] == 1
    assert MANIFEST.total("train") == 3


def valid_document() -> dict[str, object]:
    return json.loads(MANIFEST.to_json())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"format": 2}, "format 2 is not 1"),
        ({"classes": []}, "'classes' must be a non-empty list"),
        ({"classes": "bicycle"}, "'classes' must be a list"),
        ({"counts": {"train": {}}}, "must have exactly"),
        ({"counts": {"train": {"bicycle": 1}, "test": {}}}, "must count every class"),
        (
            {"counts": {"train": {"bicycle": -1, "motorcycle": 0}, "test": {}}},
            "must be non-negative integers",
        ),
        ({"archive_sha256": "xyz"}, "must be a hex SHA-256"),
        ({"objects": True}, "'objects' must be a int"),
        ({"source": None}, "'source' must be a str"),
    ],
)
def test_malformed_manifest_is_refused_by_field(change: dict[str, object], expected: str) -> None:
    document = valid_document() | change
    with pytest.raises(ManifestError, match=expected):
        Manifest.from_json(json.dumps(document))


def test_manifest_missing_field_is_named() -> None:
    document = valid_document()
    del document["content_sha256"]
    with pytest.raises(ManifestError, match="no field 'content_sha256'"):
        Manifest.from_json(json.dumps(document))


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", "\xff", b"\xff\xfe"])
def test_non_manifest_text_is_refused(text: str | bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_json(text)


def test_content_hash_depends_on_keys_and_content_not_order() -> None:
    one = content_sha256({"train/a.png": "1" * 32, "train.lst": "2" * 32})
    assert one == content_sha256({"train.lst": "2" * 32, "train/a.png": "1" * 32})
    assert one != content_sha256({"train/a.png": "3" * 32, "train.lst": "2" * 32})
    assert one != content_sha256({"test/a.png": "1" * 32, "train.lst": "2" * 32})


def test_a_huge_bad_line_is_shown_bounded() -> None:
    with pytest.raises(ManifestError) as error:
        parse_lst("x" * 100_000 + "\n")
    message = str(error.value)
    assert "expected 3 tab-separated fields" in message and "(100000 characters)" in message
    assert len(message) < 200
