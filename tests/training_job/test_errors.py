"""Error messages show values bounded and readable, never an object's memory address."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, UnidentifiedImageError

from contract import shown
from training_job.errors import one_line


def test_a_long_value_is_cut_and_its_length_said() -> None:
    text = shown("b" * 100_000)
    assert text.startswith("'bbbb") and text.endswith("... (100000 characters)")
    assert len(text) < 120
    assert shown("short-name") == "'short-name'"
    assert shown(Path("/tmp/x")) == "'/tmp/x'"


def test_objects_are_shown_by_name_or_type_not_address(tmp_path: Path) -> None:
    buffer = io.BytesIO(b"not an image")
    assert shown(buffer) == "a BytesIO"
    with (tmp_path / "f.bin").open("wb") as file:
        assert shown(file) == repr(str(tmp_path / "f.bin"))


def test_a_library_message_loses_its_addresses_and_its_length() -> None:
    with pytest.raises(UnidentifiedImageError) as error:
        Image.open(io.BytesIO(b"not an image"))
    assert " at 0x" in str(error.value)  # PIL names the buffer by its address
    assert one_line(str(error.value)) == "cannot identify image file <_io.BytesIO>"
    long = one_line("line one\nline two " + "x" * 10_000)
    assert "\n" not in long and len(long) < 600 and long.startswith("line one line two")
