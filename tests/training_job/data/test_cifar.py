"""The archive reader refuses hostile archives by name; the download resumes and checks."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from contract.manifest import read_lst
from tests.training_job.staging_helpers import (
    member,
    meta_pickle,
    python2_pickle,
    serve_files,
    special_member,
    split_pickle,
    standard_members,
    write_archive,
)
from training_job.data import cifar
from training_job.data.cifar import ArchiveError, DownloadError


def test_reads_the_shared_archive(shared_data: Path) -> None:
    archive = cifar.read_archive(shared_data / "cifar-100-python-vehicles.tar.gz")
    assert archive.train.data.shape == (1000, 3072)
    assert archive.test.data.shape == (200, 3072)
    assert archive.train.data.dtype == np.uint8
    assert archive.fine_label_names == cifar.FINE_LABEL_NAMES
    assert set(archive.train.fine_labels) == {8, 48}
    # The shared manifests list the images in archive row order.
    lst_names = [entry.filename for entry in read_lst(shared_data / "train.lst")]
    assert archive.train.filenames == lst_names


def test_reads_a_built_archive_with_numpy2_pickles(tmp_path: Path) -> None:
    train = split_pickle(6, 1)
    path = write_archive(tmp_path / "a.tar.gz", standard_members(train=train))
    archive = cifar.read_archive(path)
    assert np.array_equal(archive.train.data, train[b"data"])
    assert archive.train.filenames == [name.decode() for name in train[b"filenames"]]


def test_row_to_image_is_channel_planar() -> None:
    row = np.zeros(3072, dtype=np.uint8)
    row[1] = 11  # red plane, y=0 x=1
    row[1024 + 32] = 22  # green plane, y=1 x=0
    row[2048 + 33] = 33  # blue plane, y=1 x=1
    image = cifar.row_to_image(row)
    assert image.shape == (32, 32, 3)
    assert image[0, 1].tolist() == [11, 0, 0]
    assert image[1, 0].tolist() == [0, 22, 0]
    assert image[1, 1].tolist() == [0, 0, 33]


def test_uncompressed_tar_and_unrelated_members_are_accepted(tmp_path: Path) -> None:
    members = [member("cifar-100-python/file.txt~", b"notes"), *standard_members()]
    path = write_archive(tmp_path / "a.tar", members, mode="w")
    assert cifar.read_archive(path).test.data.shape == (3, 3072)


def refused(path: Path) -> str:
    with pytest.raises(ArchiveError) as caught:
        cifar.read_archive(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../cifar-100-python/train", "path traversal"),
        ("cifar-100-python/../../etc/passwd", "path traversal"),
        ("/etc/passwd", "absolute"),
    ],
)
def test_unsafe_member_names_are_refused(tmp_path: Path, name: str, expected: str) -> None:
    members = [member(name, b"x"), *standard_members()]
    assert expected in refused(write_archive(tmp_path / "a.tar.gz", members))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [(tarfile.SYMTYPE, "is a link"), (tarfile.LNKTYPE, "is a link"), (tarfile.CHRTYPE, "device")],
)
def test_links_and_devices_are_refused(tmp_path: Path, kind: bytes, expected: str) -> None:
    # The link stands where a pickle is expected, pointing at a file outside the archive.
    members = [
        special_member("cifar-100-python/train", kind, "/etc/passwd"),
        *standard_members()[1:],
    ]
    message = refused(write_archive(tmp_path / "a.tar.gz", members))
    assert expected in message
    assert "cifar-100-python/train" in message


def test_oversized_member_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_archive(tmp_path / "a.tar.gz", standard_members())
    monkeypatch.setattr(cifar, "MAX_MEMBER_BYTES", 1000)
    assert "over the limit of 1000" in refused(path)


def test_duplicate_member_is_refused(tmp_path: Path) -> None:
    members = [*standard_members(), standard_members()[0]]
    assert "appears twice" in refused(write_archive(tmp_path / "a.tar.gz", members))


def test_missing_member_is_refused(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a.tar.gz", standard_members()[:2])
    assert "missing member(s) cifar-100-python/meta" in refused(path)


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_referencing_os_system_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = python2_pickle({b"data": _RunsACommand(marker)})
    members = standard_members(train=hostile)
    message = refused(write_archive(tmp_path / "a.tar.gz", members))
    assert "refused to load posix.system" in message or "refused to load os.system" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("hostile", "name"),
    [
        (b"cos\nsystem\n(S'touch {marker}'\ntR.", "os.system"),
        (b'cbuiltins\neval\n(S\'open("{marker}", "w")\'\ntR.', "builtins.eval"),
        (b"csubprocess\ncall\n((S'touch'\nS'{marker}'\nltR.", "subprocess.call"),
    ],
)
def test_pickle_globals_other_than_numpy_are_refused_by_name(
    tmp_path: Path, hostile: bytes, name: str
) -> None:
    marker = tmp_path / "pwned"
    payload = hostile.replace(b"{marker}", str(marker).encode())
    for position in ("train", "meta"):
        archive = write_archive(
            tmp_path / f"{position}.tar.gz", standard_members(**{position: payload})
        )
        assert f"refused to load {name}" in refused(archive)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        (split_pickle(6, data=np.zeros((6, 3072), dtype=np.int64)), "dtype int64, expected uint8"),
        (split_pickle(6, data=np.zeros((6, 3000), dtype=np.uint8)), "shape (6, 3000)"),
        (split_pickle(6, data=np.zeros((6, 32, 96), dtype=np.uint8)), "shape (6, 32, 96)"),
        (split_pickle(6, fine_labels=[8] * 5), "6 rows but 5 fine_labels"),
        (split_pickle(6, fine_labels=[8, 48, 100, 0, 8, 8]), "fine_labels must be integers"),
        (split_pickle(6, data=[[0] * 3072] * 6), "'data' is not a ndarray"),
        (split_pickle(2, filenames=[b"../../x.png", b"a.png"]), "unsafe filename"),
        ({b"fine_labels": []}, "no 'data' entry"),
        ([1, 2, 3], "expected a dict, got list"),
        (b"not a pickle", "not a readable CIFAR pickle"),
    ],
)
def test_wrong_split_contents_are_refused(tmp_path: Path, train: object, expected: str) -> None:
    path = write_archive(tmp_path / "a.tar.gz", standard_members(train=train))
    message = refused(path)
    assert expected in message
    assert "cifar-100-python/train" in message


def test_meta_with_other_label_names_is_refused(tmp_path: Path) -> None:
    meta = meta_pickle(tuple(f"class_{i}" for i in range(100)))
    assert "not CIFAR-100's" in refused(
        write_archive(tmp_path / "a.tar.gz", standard_members(meta=meta))
    )


def test_truncated_archive_is_refused(tmp_path: Path, shared_data: Path) -> None:
    whole = (shared_data / "cifar-100-python-vehicles.tar.gz").read_bytes()
    path = tmp_path / "truncated.tar.gz"
    path.write_bytes(whole[: len(whole) // 2])
    assert "truncated" in refused(path)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.tar.gz"
    path.write_bytes(b"")
    assert "empty file" in refused(path)


def test_non_tar_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not an archive\n" * 100)
    assert "not a readable" in refused(path)


# --- download ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("archive") / "a.tar.gz"
    return write_archive(path, standard_members()).read_bytes()


def test_download_is_kept_after_the_layout_check(tmp_path: Path, small_archive: bytes) -> None:
    with serve_files({"/cifar.tar.gz": small_archive}) as server:
        url = f"{server.url}/cifar.tar.gz"
        path = cifar.fetch(url, tmp_path)
        assert path.read_bytes() == small_archive
        # A second fetch is served from the cache, without a request.
        assert cifar.fetch(url, tmp_path) == path
        assert len(server.requests) == 1


def test_partial_download_resumes_with_a_range_request(
    tmp_path: Path, small_archive: bytes
) -> None:
    with serve_files({"/cifar.tar.gz": small_archive}) as server:
        url = f"{server.url}/cifar.tar.gz"
        kept = cifar.cached_path(url, tmp_path)
        part = kept.with_name(kept.name + ".part")
        part.parent.mkdir(parents=True)
        part.write_bytes(small_archive[:1000])
        path = cifar.fetch(url, tmp_path)
        assert server.requests[-1]["Range"] == "bytes=1000-"
        assert path.read_bytes() == small_archive
        assert not part.exists()


def test_interrupted_download_keeps_the_part_and_the_next_run_finishes(
    tmp_path: Path, small_archive: bytes
) -> None:
    with serve_files({"/cifar.tar.gz": small_archive}) as server:
        url = f"{server.url}/cifar.tar.gz"
        server.cut_after = len(small_archive) - 5000
        with pytest.raises(DownloadError, match="run again to resume"):
            cifar.fetch(url, tmp_path)
        kept = cifar.cached_path(url, tmp_path)
        received = kept.with_name(kept.name + ".part").stat().st_size
        assert not kept.exists()
        assert received > 0
        server.cut_after = None
        assert cifar.fetch(url, tmp_path).read_bytes() == small_archive
        assert server.requests[-1]["Range"] == f"bytes={received}-"


def test_wrong_checksum_for_a_known_url_keeps_nothing(
    tmp_path: Path, small_archive: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_files({"/cifar-100-python.tar.gz": small_archive}) as server:
        url = f"{server.url}/cifar-100-python.tar.gz"
        monkeypatch.setitem(cifar.KNOWN_MD5, url, "0" * 32)
        with pytest.raises(DownloadError, match="checksum mismatch"):
            cifar.fetch(url, tmp_path)
        assert list((tmp_path / "downloads").iterdir()) == []


def test_right_checksum_for_a_known_url_is_kept(
    tmp_path: Path, small_archive: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_files({"/cifar-100-python.tar.gz": small_archive}) as server:
        url = f"{server.url}/cifar-100-python.tar.gz"
        monkeypatch.setitem(cifar.KNOWN_MD5, url, hashlib.md5(small_archive).hexdigest())
        assert cifar.fetch(url, tmp_path).read_bytes() == small_archive


def test_downloaded_non_archive_keeps_nothing(tmp_path: Path) -> None:
    with serve_files({"/page.html": b"<html>not found</html>"}) as server:
        with pytest.raises(ArchiveError, match="not a readable"):
            cifar.fetch(f"{server.url}/page.html", tmp_path)
        assert list((tmp_path / "downloads").iterdir()) == []


def test_oversized_download_is_refused_and_discarded(
    tmp_path: Path, small_archive: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cifar, "MAX_DOWNLOAD_BYTES", 1000)
    with serve_files({"/cifar.tar.gz": small_archive}) as server:
        with pytest.raises(DownloadError, match="over the limit of 1000"):
            cifar.fetch(f"{server.url}/cifar.tar.gz", tmp_path)
        assert list((tmp_path / "downloads").iterdir()) == []


def test_http_error_is_named(tmp_path: Path) -> None:
    with serve_files({}) as server, pytest.raises(DownloadError, match="HTTP 404"):
        cifar.fetch(f"{server.url}/missing.tar.gz", tmp_path)
