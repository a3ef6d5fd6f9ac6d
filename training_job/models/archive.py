"""model.tar.gz, unpacked safely: the one extractor `deploy` and `monitor` both use.

A model archive is input from the bucket: whoever can write under models/ chooses its
contents. Before anything is written, every entry is checked: no path outside the
destination, no links or special files, at most MAX_ARCHIVE_MEMBERS entries and
MAX_EXTRACTED_BYTES in all (a 13 MB archive can declare gigabytes). The entries are
unpacked into a sibling folder that is renamed into place, so a refused or failed archive
leaves nothing behind.
"""

from __future__ import annotations

import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

MAX_ARCHIVE_MEMBERS = 10_000
MAX_EXTRACTED_BYTES = 2 * 1024**3
REQUIRED_FILES = ("model.pth", "model.json")


class ModelArchiveError(ValueError):
    """A model.tar.gz that cannot be used, with a message for the user."""


class UnsafeArchiveError(ModelArchiveError):
    """A model.tar.gz that would write outside its folder, link, or is far too large."""


def _checked_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    total = 0
    # Iterated, not getmembers(): the caps apply while the headers are read.
    for member in tar:
        if len(members) >= MAX_ARCHIVE_MEMBERS:
            raise UnsafeArchiveError(f"the archive holds over {MAX_ARCHIVE_MEMBERS} entries")
        path = PurePosixPath(member.name)
        name = member.name[:100]
        if path.is_absolute() or ".." in path.parts:
            raise UnsafeArchiveError(f"entry {name!r} would be written outside the model")
        if not (member.isfile() or member.isdir()) or member.issparse():
            raise UnsafeArchiveError(f"entry {name!r} is a link or special file")
        total += member.size
        if total > MAX_EXTRACTED_BYTES:
            raise UnsafeArchiveError(f"the archive unpacks to over {MAX_EXTRACTED_BYTES} bytes")
        members.append(member)
    return members


def extract_model(archive: Path, destination: Path) -> Path:
    """Unpack model.tar.gz into `destination` (replaced whole, never left half-written),
    refusing paths outside it, links, special files, archives that unpack too large and
    archives without model.pth and model.json."""
    partial = destination.with_name(destination.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _checked_members(tar)
            tar.extractall(partial, members=members, filter="data")
        missing = [name for name in REQUIRED_FILES if not (partial / name).is_file()]
        if missing:
            raise ModelArchiveError(
                f"{archive} has no {' or '.join(missing)}: not a model artifact"
            )
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise ModelArchiveError(f"{archive} is not a readable model.tar.gz: {error}") from error
    except ModelArchiveError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(destination, ignore_errors=True)
    partial.rename(destination)
    return destination


def read_member(stream: IO[bytes], name: str, max_bytes: int) -> bytes | None:
    """One regular file of a model.tar.gz read as a stream (from S3, say), without
    unpacking anything else; None when the archive has no such file. Raises
    ModelArchiveError when it is unreadable or the file is over `max_bytes`."""
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_ARCHIVE_MEMBERS:
                    raise UnsafeArchiveError(
                        f"the archive holds over {MAX_ARCHIVE_MEMBERS} entries"
                    )
                if member.name.removeprefix("./") != name or not member.isfile():
                    continue
                if member.size > max_bytes:
                    raise ModelArchiveError(f"{name} is {member.size} bytes, over {max_bytes}")
                extracted = tar.extractfile(member)
                return extracted.read() if extracted is not None else None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise ModelArchiveError(f"not a readable model.tar.gz: {error}") from error
    return None
