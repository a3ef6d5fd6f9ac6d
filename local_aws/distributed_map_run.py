"""A Distributed Map's run in the local AWS (`run_map`), as AWS runs the backfill's
subset: the S3 listing (ItemReader `s3:listObjectsV2`, every page, with the role),
batches (ItemBatcher), the ItemProcessor run as one child per batch (at most
MaxConcurrency at once), the tolerated-failure thresholds, and the results exported as
AWS's ResultWriter writes them (manifest.json, SUCCEEDED_n.json, FAILED_n.json,
PENDING_n.json under `<Prefix>/<map run id>/`). How a definition gets here, and how a
child runs in moto's interpreter: local_aws/distributed_map.py.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# AWS's limits (Step Functions developer guide, "Using Map state in Distributed mode" and
# "ItemBatcher (Map)"; Service quotas): up to 10,000 child executions at once; a batch's
# input is a state input, at most 256 KiB.
MAX_CONCURRENCY = 10_000
MAX_BATCH_INPUT_BYTES = 256 * 1024
# The children run here on threads; past this many the machine only queues them.
LOCAL_CHILD_THREADS = 16

ITEM_READER_FAILED = "States.ItemReaderFailed"
RESULT_WRITER_FAILED = "States.ResultWriterFailed"
EXCEED_TOLERATED_FAILURE_THRESHOLD = "States.ExceedToleratedFailureThreshold"


class MapRunFailed(Exception):
    """The map run failed with a States.* error, which fails the Map state."""

    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


@dataclass
class MapSpec:
    """What moto's grammar cannot hold of one Distributed Map state."""

    state: dict[str, Any]

    @property
    def batcher(self) -> dict[str, Any] | None:
        batcher: dict[str, Any] | None = self.state.get("ItemBatcher")
        return batcher

    @property
    def max_concurrency(self) -> int:
        return int(self.state.get("MaxConcurrency") or 0) or MAX_CONCURRENCY

    @property
    def execution_type(self) -> str:
        return str(self.state["ItemProcessor"]["ProcessorConfig"].get("ExecutionType", ""))


def resolve(template: Any, document: Any, context: dict[str, Any]) -> Any:
    """`template` with each `"key.$": path` replaced by `"key": value`: paths `$.a.b` into
    `document`, `$$.a.b` into the context object (the subset of JSONPath the backfill's
    Parameters and BatchInput use)."""
    if isinstance(template, list):
        return [resolve(value, document, context) for value in template]
    if not isinstance(template, dict):
        return template
    resolved: dict[str, Any] = {}
    for key, value in template.items():
        if key.endswith(".$") and isinstance(value, str):
            resolved[key[:-2]] = _path(value, document, context)
        else:
            resolved[key] = resolve(value, document, context)
    return resolved


def _path(path: str, document: Any, context: dict[str, Any]) -> Any:
    value, rest = (context, path[3:]) if path.startswith("$$.") else (document, path[2:])
    if path in ("$", "$$"):
        return context if path == "$$" else document
    for part in rest.split("."):
        if not isinstance(value, dict) or part not in value:
            raise MapRunFailed(
                "States.Runtime", f"The JSONPath '{path}' could not be found in the input"
            )
        value = value[part]
    return value


def list_items(s3: Any, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object under the prefix, as AWS's ItemReader gives them (Key, Etag with its
    quotes, LastModified in epoch seconds, Size, StorageClass): all pages."""
    items: list[dict[str, Any]] = []
    arguments = {"Bucket": parameters.get("Bucket"), "Prefix": parameters.get("Prefix", "")}
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(**arguments):
            for entry in page.get("Contents", []):
                items.append(
                    {
                        "Etag": entry["ETag"],
                        "Key": entry["Key"],
                        "LastModified": int(entry["LastModified"].timestamp()),
                        "Size": entry["Size"],
                        "StorageClass": entry.get("StorageClass", "STANDARD"),
                    }
                )
    except Exception as error:  # a refused or failed listing: the reader failed
        raise MapRunFailed(ITEM_READER_FAILED, f"S3 ListObjectsV2 failed: {error}") from None
    return items


def batches(
    items: list[Any], batcher: dict[str, Any] | None, batch_input: dict[str, Any] | None
) -> list[Any]:
    """The children's inputs: each item alone, or `{"Items": [...], "BatchInput": ...}`
    holding at most MaxItemsPerBatch items and MaxInputBytesPerBatch bytes."""
    if batcher is None:
        return list(items)
    most_items = batcher.get("MaxItemsPerBatch") or len(items) or 1
    most_bytes = batcher.get("MaxInputBytesPerBatch") or MAX_BATCH_INPUT_BYTES
    extra = {"BatchInput": batch_input} if batch_input is not None else {}
    overhead = len(json.dumps({"Items": [], **extra}).encode())
    groups: list[list[Any]] = []
    size = overhead
    for item in items:
        item_bytes = len(json.dumps(item).encode()) + 1
        if overhead + item_bytes > most_bytes:
            raise MapRunFailed(
                ITEM_READER_FAILED,
                f"an item of {item_bytes} bytes does not fit a batch of {most_bytes} bytes",
            )
        if not groups or len(groups[-1]) >= most_items or size + item_bytes > most_bytes:
            groups.append([])
            size = overhead
        groups[-1].append(item)
        size += item_bytes
    return [{"Items": group, **extra} for group in groups]


@dataclass
class ChildResult:
    """One child execution as ResultWriter reports it."""

    name: str
    input: Any
    start: datetime
    status: str = "PENDING"
    output: Any = None
    error: str = ""
    cause: str = ""
    stop: datetime | None = None
    items: int = 1

    def record(self, map_run_arn: str, state_machine_arn: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "ExecutionArn": f"{map_run_arn.replace(':mapRun:', ':execution:')}:{self.name}",
            "Input": json.dumps(self.input),
            "InputDetails": {"Included": True},
            "Name": self.name,
            "RedriveCount": 0,
            "RedriveStatus": "NOT_REDRIVABLE",
            "StartDate": self.start.isoformat(timespec="milliseconds"),
            "StateMachineArn": state_machine_arn,
            "Status": self.status,
        }
        if self.stop is not None:
            record["StopDate"] = self.stop.isoformat(timespec="milliseconds")
        if self.status == "SUCCEEDED":
            record["Output"] = json.dumps(self.output)
            record["OutputDetails"] = {"Included": True}
        elif self.status == "FAILED":
            record["Error"], record["Cause"] = self.error, self.cause
        return record


@dataclass
class Tally:
    """Failed items against the thresholds: AWS fails the map run once either the count
    or the percentage of failed items is exceeded."""

    total: int
    tolerated_count: int | None
    tolerated_percentage: float
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, items: int) -> bool:
        """Counts `items` failed; True once a threshold is exceeded."""
        with self.lock:
            self.failed += items
            return self.exceeded()

    def exceeded(self) -> bool:
        over_count = self.tolerated_count is not None and self.failed > self.tolerated_count
        share = 100 * self.failed / self.total if self.total else 0
        return over_count or share > self.tolerated_percentage


def run_children(
    inputs: list[Any],
    run_child: Callable[[Any], Any],
    concurrency: int,
    tally: Tally,
    parent_running: Callable[[], bool] = lambda: True,
    counted: Callable[[str, int], None] = lambda _status, _items: None,
) -> list[ChildResult]:
    """Each input through `run_child` (which raises MapRunFailed for a failed child), at
    most `concurrency` at once; none started once the failure threshold is exceeded, or
    once the parent execution is not running (stopped). `counted(status, items)` hears
    of each child that ended (DescribeMapRun's counts)."""
    now = datetime.now(UTC)
    results = [
        ChildResult(name=str(uuid.uuid4()), input=child_input, start=now,
                    items=len(child_input["Items"]) if _is_batch(child_input) else 1)
        for child_input in inputs
    ]  # fmt: skip

    def run(result: ChildResult) -> None:
        result.start = datetime.now(UTC)
        result.status = "RUNNING"
        try:
            result.output = run_child(result.input)
            result.status = "SUCCEEDED"
            counted("succeeded", result.items)
        except MapRunFailed as failure:
            result.status, result.error, result.cause = "FAILED", failure.error, failure.cause
            tally.fail(result.items)
            counted("failed", result.items)
        except Exception as error:  # the interpreter's own fault: the child failed
            result.status, result.error, result.cause = "FAILED", "States.Runtime", repr(error)
            tally.fail(result.items)
            counted("failed", result.items)
        result.stop = datetime.now(UTC)

    pending = iter(results)
    running: set[Future[None]] = set()
    stopped = False
    workers = max(1, min(concurrency, LOCAL_CHILD_THREADS, len(results)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="map-child") as pool:
        while True:
            while not stopped and len(running) < workers:
                result = next(pending, None)
                if result is None:
                    break
                running.add(pool.submit(run, result))
            if not running:
                break
            _done, running = wait(running, return_when=FIRST_COMPLETED)
            stopped = stopped or tally.exceeded() or not parent_running()
    return results


def _is_batch(child_input: Any) -> bool:
    return isinstance(child_input, dict) and isinstance(child_input.get("Items"), list)


def write_results(
    s3: Any,
    parameters: dict[str, Any],
    map_run_arn: str,
    state_machine_arn: str,
    results: list[ChildResult],
) -> dict[str, Any]:
    """ResultWriter's export: one file per status that has children, and the manifest
    naming them; the Map's output names the manifest."""
    bucket = parameters.get("Bucket")
    prefix = str(parameters.get("Prefix", ""))
    prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    run_id = map_run_arn.rsplit(":", 1)[-1]
    files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
    try:
        for status in files:
            records = [
                r.record(map_run_arn, state_machine_arn)
                for r in results
                if (r.status if r.status != "RUNNING" else "PENDING") == status
            ]
            if not records:
                continue
            key = f"{prefix}{run_id}/{status}_0.json"
            body = json.dumps(records).encode()
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            files[status].append({"Key": key, "Size": len(body)})
        manifest_key = f"{prefix}{run_id}/manifest.json"
        manifest = {"DestinationBucket": bucket, "MapRunArn": map_run_arn, "ResultFiles": files}
        s3.put_object(Bucket=bucket, Key=manifest_key, Body=json.dumps(manifest).encode())
    except Exception as error:
        raise MapRunFailed(RESULT_WRITER_FAILED, f"S3 PutObject failed: {error}") from None
    return {
        "MapRunArn": map_run_arn,
        "ResultWriterDetails": {"Bucket": bucket, "Key": manifest_key},
    }


def run_map(
    spec: MapSpec,
    state_input: Any,
    context: dict[str, Any],
    map_run_arn: str,
    s3: Any,
    run_child: Callable[[Any], Any],
    parent_running: Callable[[], bool] = lambda: True,
    counted: Callable[[str, int], None] = lambda _status, _items: None,
    authorize: Callable[[str, str], None] = lambda _action, _resource: None,
) -> Any:
    """One map run of `spec`: the Map state's result (the ResultWriter's details, or the
    children's outputs in order). MapRunFailed for AWS's map-run errors. A parent stopped
    (StopExecution) starts no more children and exports nothing: its run is aborted."""
    state = spec.state
    # The children are executions the parent's role starts, follows and stops ("IAM
    # policies for running Distributed Map states"): refused, the map run cannot start.
    machine = context["StateMachine"]["Id"]
    children = f"{map_run_arn.replace(':mapRun:', ':execution:')}:child"
    authorize("states:StartExecution", machine)
    authorize("states:DescribeExecution", children)
    reader = state.get("ItemReader")
    if reader is not None:
        items = list_items(s3, resolve(reader.get("Parameters", {}), state_input, context))
    else:
        items = _path(state.get("ItemsPath", "$"), state_input, context)
    batch_input = None
    if spec.batcher is not None and "BatchInput" in spec.batcher:
        batch_input = resolve(spec.batcher["BatchInput"], state_input, context)
    inputs = batches(items, spec.batcher, batch_input)
    counted("total", len(items))
    tally = Tally(
        total=len(items),
        tolerated_count=state.get("ToleratedFailureCount"),
        tolerated_percentage=float(state.get("ToleratedFailurePercentage", 0)),
    )
    if "ToleratedFailureCount" not in state and "ToleratedFailurePercentage" in state:
        tally.tolerated_count = None  # the percentage alone decides
    results = run_children(inputs, run_child, spec.max_concurrency, tally, parent_running, counted)
    if not parent_running():
        return None
    writer = state.get("ResultWriter")
    output = (
        write_results(
            s3,
            resolve(writer.get("Parameters", {}), state_input, context),
            map_run_arn,
            context["StateMachine"]["Id"],
            results,
        )
        if writer is not None
        else [r.output for r in results]
    )
    if tally.exceeded():
        raise MapRunFailed(
            EXCEED_TOLERATED_FAILURE_THRESHOLD,
            f"{tally.failed} of {tally.total} items failed, over the tolerated "
            f"{tally.tolerated_count if tally.tolerated_count is not None else 'any'} items "
            f"or {tally.tolerated_percentage:g} %",
        )
    return output
