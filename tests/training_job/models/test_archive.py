"""One safe extractor for model.tar.gz: deploy and the monitor refuse the same archives."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import boto3
import pytest

from training_job.models import archive as model_archive
from training_job.monitor import baseline
from training_job.serving import deployment


def zeros_archive(path: Path, size: int) -> Path:
    """model.pth, model.json and a member of `size` zero bytes, streamed (never in memory)."""

    class Zeros(io.RawIOBase):
        def __init__(self, left: int) -> None:
            self.left = left

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            count = min(len(buffer), self.left)
            buffer[:count] = bytes(count)
            self.left -= count
            return count

    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        for name, data in (("model.pth", b"x"), ("model.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("code/padding.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(Zeros(size)))
    return path


def test_a_header_declaring_gigabytes_is_refused_before_any_data_is_read(tmp_path: Path) -> None:
    header = tarfile.TarInfo("model.pth")
    header.size = 3 * 1024**3
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(gzip.compress(header.tobuf() + bytes(4096)))
    with pytest.raises(model_archive.UnsafeArchiveError, match="unpacks to over"):
        model_archive.extract_model(archive, tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tar.gz"]


def test_the_monitor_refuses_what_deploy_refuses(
    local_aws: dict[str, str],
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cap scaled down so the archive stays small to build: 100 MiB against 64 MiB.
    monkeypatch.setattr(model_archive, "MAX_EXTRACTED_BYTES", 64 * 1024**2)
    archive = zeros_archive(tmp_path / "model.tar.gz", 100 * 1024**2)
    assert archive.stat().st_size < 1024**2
    with pytest.raises(deployment.DeployError, match="unpacks to over"):
        deployment.extract_model(archive, tmp_path / "deployed")

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    key = "models/job/output/model.tar.gz"
    s3.upload_file(str(archive), unique_name, key)
    workdir = tmp_path / "monitor"
    workdir.mkdir()
    with pytest.raises(baseline.BaselineError, match="unpacks to over"):
        baseline.fetch_model(unique_name, key, workdir)
    assert list(workdir.iterdir()) == []  # nothing unpacked, the download removed
