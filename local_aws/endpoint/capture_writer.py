"""Data capture for the local endpoint: sampled requests to S3, as SageMaker writes them,
through a local spool so that a request answered 200 is captured unless the disk is lost.

`offer` turns the request into its capture record (`training_job.serving.capture.build_record`,
the Model Monitor JSON line) and appends that line to this worker's spool segment with
one `write` before it returns; the app answers only after that. The line is then in the
kernel's page cache: a kill -9 of the worker or of the whole endpoint loses nothing (the
file outlives the process); a kernel crash or power cut loses what the kernel had not yet
written back (Linux writes dirty pages within about 30 s). Records are not fsync'd one by
one: that costs a disk flush per request (see docs/benchmarks.md, "Capture durability").

A segment is locked (`flock`) by the process writing it. The writer closes its segment
and opens a new one each `flush_seconds`, and at once when the next line would take it
past SEGMENT_BYTES (so an object stays within what every reader reads, contract/capture.py),
waking the uploader thread, which ships every segment it can lock,
oldest first: its own closed ones, and those a dead worker left (the kernel releases a
dead process's locks, so a killed worker's records are shipped by its siblings at once,
or by the next start of the endpoint). A segment becomes one S3 object per hour folder,
under a key derived from the segment's name, and is deleted only after S3 has them all;
S3 errors are retried with backoff (0.5 s doubling to 4 s) for as long as S3 is away.

A segment's name carries the variant whose answers it holds (`<time>-<pid>-<id>.<variant>
.jsonl`); it is shipped under that variant's folder whichever writer ships it, so what
a killed v1 left is filed under v1 even when the next start serves v2.

Exactly once: each record is in one segment, a segment maps to the same keys however
often it is shipped, so shipping again (after a crash between the upload and the delete)
replaces the objects instead of duplicating them; each eventId appears in S3 once.

The spool is bounded (`spool_bytes` per worker, counting what this worker wrote and S3
does not have yet). When a record does not fit while S3 takes uploads, `offer_waiting`
holds the request until the uploader has made room (backpressure, up to
BACKPRESSURE_SECONDS): capture keeps up with the endpoint because the endpoint answers no
faster than S3 takes its captures. While S3 is away, or past that wait, a record that does
not fit is dropped, counted in `endpoint_capture_records_dropped_total` and logged (the
first at once, then the count each DROP_LOG_INTERVAL_SECONDS and at close), never
silently, and never the request.

`close` (SIGTERM) returns within CLOSE_SHIP_SECONDS whatever S3 does: it ships what S3
takes by then from a thread it does not wait for past that, and what is left (a hung
upload's segment included) stays in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from contract.capture import MAX_LINE_BYTES, MAX_OBJECT_BYTES
from local_aws.endpoint.metrics import WorkerMetrics
from training_job.serving import capture

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 4.0
CLOSE_SHIP_SECONDS = 5.0  # at SIGTERM; what S3 does not take by then waits for the next start
DROP_LOG_INTERVAL_SECONDS = 10.0
# A segment becomes at most one object per hour folder, so this bounds objects under the
# readers' MAX_OBJECT_BYTES; a quarter of it, so one segment ships while the next fills.
SEGMENT_BYTES = MAX_OBJECT_BYTES // 4
# How long a request waits for room in a full spool while S3 takes uploads (several
# uploads of a whole segment, well within a client's 60 s InvokeEndpoint timeout).
BACKPRESSURE_SECONDS = 20.0
BACKPRESSURE_POLL_SECONDS = 0.02
# Keys of one segment's objects are derived from its name, so a re-shipped segment
# overwrites its objects (see the module's docstring).
OBJECT_NAMESPACE = uuid.UUID("6d1c5b0e-6f0b-4b5e-9a44-3f2a8c1e7d21")


@dataclass(frozen=True)
class Invocation:
    input_body: bytes
    input_content_type: str
    output_body: bytes
    output_content_type: str
    inference_time: datetime
    inference_id: str | None
    # A shadow variant's record shares its production record's eventId, so the two
    # answers to one request can be compared (training_job/monitor/versions.py).
    event_id: str | None = None


class S3Unavailable(Exception):
    """S3 refused or did not answer; the segment stays in the spool and is retried."""


class _SpoolFull(Exception):
    """No room for the record until the uploader ships a segment."""


def variant_of(segment: Path) -> str | None:
    """The variant whose answers a segment holds, from its name; None for a segment
    written before names carried it (SageMaker's variant names hold no dots)."""
    stem = segment.name.removesuffix(SEGMENT_SUFFIX)
    _, dot, variant = stem.rpartition(".")
    return variant if dot and variant else None


class _Segment:
    """The file this worker appends to, locked for as long as it is written."""

    def __init__(self, spool_dir: Path, variant: str) -> None:
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.{variant}"
        partial = spool_dir / f"{name}.partial"
        self.fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        # Renamed only once locked: an uploader never sees it unlocked while it is in use.
        self.path = spool_dir / f"{name}{SEGMENT_SUFFIX}"
        os.rename(partial, self.path)
        self.opened = time.monotonic()
        self.size = 0
        self.records = 0

    def close(self) -> None:
        os.close(self.fd)  # releases the lock: from now on any uploader may ship it


class CaptureWriter:
    def __init__(
        self,
        bucket: str,
        endpoint_name: str,
        spool_dir: Path,
        flush_seconds: float,
        spool_bytes: int,
        metrics: WorkerMetrics,
        variant: str = capture.DEFAULT_VARIANT,
    ) -> None:
        self.bucket = bucket
        self.endpoint_name = endpoint_name
        self.variant = variant  # records go under data_capture/<endpoint>/<variant>/
        self.spool_dir = spool_dir
        self.flush_seconds = flush_seconds
        self.spool_bytes = spool_bytes
        self.metrics = metrics
        spool_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._wake = threading.Event()  # a segment was closed: ship it now
        self._segment: _Segment | None = _Segment(spool_dir, variant)
        self._closed_own: dict[Path, int] = {}  # this worker's rotated segments S3 lacks
        self._own_bytes = 0
        self._s3_failing = False  # the last upload failed: a full spool drops, not waits
        self._drops_lock = threading.Lock()
        self._dropped_since_log = 0
        self._last_drop_reason = ""
        self._last_drop_log = -DROP_LOG_INTERVAL_SECONDS
        self._s3: Any = boto3.client(
            "s3",
            config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10),
        )
        self._thread = threading.Thread(target=self._run, name="capture-uploader", daemon=True)
        self._thread.start()

    # --- the request path: append before the answer ---------------------------------

    def offer(self, invocation: Invocation) -> bool:
        """Spool one record before the request is answered; False (counted and logged)
        when the spool is full or cannot be written."""
        line = self._encode(invocation)
        if line is None:
            return False
        try:
            return self._append(line)
        except _SpoolFull:
            return self._drop(f"the capture spool is full ({self.spool_bytes} bytes)")

    async def offer_waiting(self, invocation: Invocation) -> bool:
        """`offer`, but a full spool holds the request (not the event loop) until the
        uploader has made room, while S3 takes uploads, for up to BACKPRESSURE_SECONDS."""
        line = self._encode(invocation)
        if line is None:
            return False
        deadline = time.monotonic() + BACKPRESSURE_SECONDS
        while True:
            try:
                return self._append(line)
            except _SpoolFull:
                if self._s3_failing or time.monotonic() >= deadline:
                    break
            self._wake.set()
            await asyncio.sleep(BACKPRESSURE_POLL_SECONDS)
        return self._drop(f"the capture spool is full ({self.spool_bytes} bytes)")

    def _encode(self, invocation: Invocation) -> bytes | None:
        record = capture.build_record(
            input_body=invocation.input_body,
            input_content_type=invocation.input_content_type,
            output_body=invocation.output_body,
            output_content_type=invocation.output_content_type,
            inference_time=invocation.inference_time,
            inference_id=invocation.inference_id,
            event_id=invocation.event_id,
        )
        line = capture.encode_lines([record])
        if len(line) > MAX_LINE_BYTES:  # no reader would read it (contract/capture.py)
            self._drop(f"the capture record is over {MAX_LINE_BYTES} bytes")
            return None
        return line

    def _append(self, line: bytes) -> bool:
        """Write the line with one `write`; _SpoolFull when it does not fit. A segment
        the line would take past SEGMENT_BYTES, or the spool past `spool_bytes`, is
        closed first and the uploader woken: a full spool empties by shipping it."""
        retired = None
        try:
            with self._lock:
                segment = self._segment
                if segment is None:  # closed: the worker has stopped serving
                    return self._drop("the capture spool is closed")
                if len(line) > self.spool_bytes:  # no wait would make room for it
                    return self._drop(f"the record is over the spool's {self.spool_bytes} bytes")
                over_spool = self._own_bytes + segment.size + len(line) > self.spool_bytes
                if segment.records and (over_spool or segment.size + len(line) > SEGMENT_BYTES):
                    retired, segment = segment, _Segment(self.spool_dir, self.variant)
                    self._segment = segment
                    self._count_closed(retired)
                if self._own_bytes + segment.size + len(line) > self.spool_bytes:
                    raise _SpoolFull
                try:
                    written = os.write(segment.fd, line)  # one write: a whole line
                except OSError as error:
                    return self._drop(f"the capture spool cannot be written: {error}")
                if written != len(line):  # a full disk: take the partial line back out
                    os.ftruncate(segment.fd, segment.size)
                    return self._drop("the capture spool's disk is full")
                segment.size += written
                segment.records += 1
        finally:
            if retired is not None:
                retired.close()  # releases its lock: the uploader may ship it now
                self._wake.set()
        self.metrics.count_capture("records_spooled")
        return True

    def _drop(self, reason: str) -> bool:
        self.metrics.count_capture("records_dropped")
        with self._drops_lock:
            self._dropped_since_log += 1
            self._last_drop_reason = reason
        self._report_drops(at_interval=True)
        return False

    def _report_drops(self, at_interval: bool) -> None:
        """Log the records dropped since the last report: the first at once, then at most
        one line each DROP_LOG_INTERVAL_SECONDS, and the rest when the writer closes."""
        with self._drops_lock:
            now = time.monotonic()
            if not self._dropped_since_log:
                return
            if at_interval and now - self._last_drop_log < DROP_LOG_INTERVAL_SECONDS:
                return
            dropped, self._dropped_since_log = self._dropped_since_log, 0
            reason = self._last_drop_reason
            self._last_drop_log = now
        log.error("%d capture record(s) dropped since the last report: %s", dropped, reason)

    # --- the uploader ------------------------------------------------------------------

    def close(self) -> None:
        """Stop the uploader, close the segment and ship what S3 takes within
        CLOSE_SHIP_SECONDS; anything left stays in the spool for the next start."""
        deadline = time.monotonic() + CLOSE_SHIP_SECONDS
        self._closing.set()
        self._wake.set()
        with self._lock:
            segment, self._segment = self._segment, None
            if segment is not None:
                self._count_closed(segment)
        if segment is not None:
            segment.close()
        # Shipped from a thread of its own: an upload to a hung S3 blocks for its whole
        # timeout, and the worker must stop in time; a segment whose upload is abandoned
        # stays in the spool (its keys are fixed, so a later ship replaces, not doubles).
        final = threading.Thread(
            target=self._ship_until, args=(deadline,), name="capture-close", daemon=True
        )
        final.start()
        final.join(max(0.0, deadline - time.monotonic()))
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._report_drops(at_interval=False)
        self._refresh_own_bytes()
        if self._closed_own:
            log.warning(
                "%d capture segment(s) left in %s: S3 did not take them in time; the "
                "endpoint's next start ships them",
                len(self._closed_own),
                self.spool_dir,
            )

    def _ship_until(self, deadline: float) -> None:
        delay = RETRY_FIRST_SECONDS
        while not self._ship_all() and time.monotonic() + delay < deadline:
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _run(self) -> None:
        delay = 0.0  # ship leftovers of an earlier run at once
        retry = RETRY_FIRST_SECONDS
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if self._closing.is_set():
                return
            self._rotate_if_due()
            self._report_drops(at_interval=True)
            if self._ship_all():
                delay, retry = self.flush_seconds, RETRY_FIRST_SECONDS
            else:
                delay, retry = retry, min(retry * 2, RETRY_MAX_SECONDS)

    def _rotate_if_due(self) -> None:
        with self._lock:
            segment = self._segment
            if segment is None or segment.records == 0:
                return
            if time.monotonic() - segment.opened < self.flush_seconds:
                return
            self._segment = _Segment(self.spool_dir, self.variant)
            self._count_closed(segment)
        segment.close()

    def _count_closed(self, segment: _Segment) -> None:
        """A closed segment of this worker's, with self._lock held: its bytes count
        against the spool until S3 has them; an empty one is deleted."""
        if segment.records == 0:
            segment.path.unlink(missing_ok=True)
            return
        self._closed_own[segment.path] = segment.size
        self._own_bytes += segment.size

    def _ship_all(self) -> bool:
        """Ship every segment no process is writing; False when S3 is unavailable."""
        try:
            for path in sorted(self.spool_dir.glob(f"*{SEGMENT_SUFFIX}")):
                self._ship(path)
        except S3Unavailable:
            self._s3_failing = True
            return False
        finally:
            self._refresh_own_bytes()
        self._s3_failing = False
        return True

    def _refresh_own_bytes(self) -> None:
        with self._lock:
            self._closed_own = {
                path: size for path, size in self._closed_own.items() if path.exists()
            }
            self._own_bytes = sum(self._closed_own.values())
            current = self._segment.size if self._segment is not None else 0
        self.metrics.set_capture_spool_bytes(self._own_bytes + current)

    def _ship(self, path: Path) -> None:
        with _locked(path) as data:
            if data is None:  # being written, or shipped and deleted by another worker
                return
            groups, damaged = self._group_by_hour(path, data)
            variant = variant_of(path) or self.variant
            for hour, (first_time, lines) in sorted(groups.items()):
                object_id = uuid.uuid5(OBJECT_NAMESPACE, f"{path.name}/{hour}")
                key = capture.object_key(
                    self.endpoint_name, first_time, variant, object_id=object_id
                )
                try:
                    self._s3.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=b"".join(lines),
                        ContentType="application/jsonl",
                    )
                except Exception as error:  # any failure: keep the segment, retry later
                    self.metrics.count_capture("put_failures")
                    log.warning("capture write to s3://%s/%s failed: %s", self.bucket, key, error)
                    raise S3Unavailable from error
                self.metrics.count_capture("objects_written")
                self.metrics.count_capture("records_written", len(lines))
            if damaged:
                self.metrics.count_capture("records_damaged", damaged)
                log.error("%d damaged line(s) in capture segment %s skipped", damaged, path)
            path.unlink()

    @staticmethod
    def _group_by_hour(
        path: Path, data: bytes
    ) -> tuple[dict[str, tuple[datetime, list[bytes]]], int]:
        groups: dict[str, tuple[datetime, list[bytes]]] = {}
        damaged = 0
        for line in data.splitlines(keepends=True):
            try:
                if not line.endswith(b"\n"):
                    raise capture.CaptureFormatError("truncated", "the line is cut short")
                record = capture.parse_line(line)
            except capture.CaptureFormatError:
                damaged += 1
                continue
            moment = record.inference_time.astimezone(UTC)
            groups.setdefault(f"{moment:%Y%m%d%H}", (moment, []))[1].append(line)
        return groups, damaged


@contextmanager
def _locked(path: Path) -> Iterator[bytes | None]:
    """The segment's bytes while holding its lock; None if a process writes it or it is
    gone (shipped by another worker between the listing and the lock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:
            yield None
            return
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
        yield data
    finally:
        os.close(fd)
