"""Data capture for the local endpoint: sampled requests to S3, as SageMaker writes them.

A request hands its record to `offer`, which never blocks: when the bounded buffer is
full the record is dropped and counted. A background thread writes the buffer every
`flush_seconds` as whole objects (one `put_object` per object, so a crash loses at most
the last interval and never leaves a broken line), and `close` writes what is left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config

from local_aws.endpoint.metrics import WorkerMetrics
from training_job import capture

log = logging.getLogger(__name__)

PUT_ATTEMPTS = 3


@dataclass(frozen=True)
class Invocation:
    input_body: bytes
    input_content_type: str
    output_body: bytes
    output_content_type: str
    inference_time: datetime
    inference_id: str | None


class CaptureWriter:
    def __init__(
        self,
        bucket: str,
        endpoint_name: str,
        flush_seconds: float,
        buffer_bytes: int,
        metrics: WorkerMetrics,
    ) -> None:
        self.bucket = bucket
        self.endpoint_name = endpoint_name
        self.flush_seconds = flush_seconds
        self.buffer_bytes = buffer_bytes
        self.metrics = metrics
        self._buffer: deque[Invocation] = deque()
        self._buffered_bytes = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._s3: Any = boto3.client("s3", config=Config(retries={"max_attempts": 2}))
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    def offer(self, invocation: Invocation) -> bool:
        """Buffer one record for the next write; False (and counted) when it is full."""
        size = len(invocation.input_body) + len(invocation.output_body)
        with self._lock:
            if self._closing.is_set() or self._buffered_bytes + size > self.buffer_bytes:
                self.metrics.count_capture("records_dropped")
                return False
            self._buffer.append(invocation)
            self._buffered_bytes += size
        return True

    def close(self) -> None:
        """Stop taking records and write every buffered one."""
        self._closing.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._closing.wait(self.flush_seconds):
            self._flush()
        self._flush()

    def _take(self) -> list[Invocation]:
        with self._lock:
            taken = list(self._buffer)
            self._buffer.clear()
            self._buffered_bytes = 0
        return taken

    def _flush(self) -> None:
        invocations = self._take()
        # One object per hour folder, so each record sits under the hour it happened in.
        by_hour: dict[str, list[Invocation]] = {}
        for invocation in invocations:
            hour = invocation.inference_time.astimezone(UTC).strftime("%Y%m%d%H")
            by_hour.setdefault(hour, []).append(invocation)
        for group in by_hour.values():
            self._put(group)

    def _put(self, group: list[Invocation]) -> None:
        records = [
            capture.build_record(
                input_body=item.input_body,
                input_content_type=item.input_content_type,
                output_body=item.output_body,
                output_content_type=item.output_content_type,
                inference_time=item.inference_time,
                inference_id=item.inference_id,
            )
            for item in group
        ]
        key = capture.object_key(self.endpoint_name, group[0].inference_time)
        body = capture.encode_lines(records)
        for attempt in range(1, PUT_ATTEMPTS + 1):
            try:
                self._s3.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType="application/jsonl"
                )
            except Exception as error:  # any failure: capture must never take the server down
                log.warning("capture write to s3://%s/%s failed: %s", self.bucket, key, error)
                if attempt < PUT_ATTEMPTS and not self._closing.is_set():
                    time.sleep(0.5 * attempt)
                continue
            self.metrics.count_capture("objects_written")
            self.metrics.count_capture("records_written", len(records))
            return
        self.metrics.count_capture("put_failures")
        self.metrics.count_capture("records_dropped", len(records))
