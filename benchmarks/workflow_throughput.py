"""Workflow throughput: end-to-end executions of the deployed workflow on the local AWS.

It builds the whole local stack itself and stops it at the end: `python -m local_aws serve`
on a free loopback port, the test split staged (`training_job stage`), a quickly trained
model behind the local endpoint (`training_job deploy --mode local`), and the real
serverless.yml deployed with `sls deploy`. Then, for each concurrency, N executions in
closed loop (each client starts the next when its previous one ends), over the test images:

  workflow   StartExecution, then DescribeExecution until the status is terminal (the
             client's view), and the execution history's timestamps (the server's view)
  reference  the same three handler functions called in sequence in this process, with
             the same S3 and endpoint behind them: no state machine, no Lambda (the floor)

Reported per concurrency: executions/s, p50/p99 latency (client and server view), and
where an execution's time goes: the endpoint (its /metrics latency histogram), the
handlers and their Lambda invocation (TaskScheduled -> TaskSucceeded/TaskFailed minus
the endpoint), and the engine (everything else between ExecutionStarted and the end).
Goal: at least 50 executions/s, p50 under 100 ms. Other processes share these CPUs, so
the load average is printed with the table and the reference is measured in the same run.

    .venv/bin/python benchmarks/workflow_throughput.py [--executions 200]
        [--concurrency 1,4,16]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from contract.manifest import parse_lst  # noqa: E402
from local_aws.server import (  # noqa: E402
    endpoint_url,
    free_port,
    local_aws_server,
    local_client,
    without_aws_variables,
)
from training_job.environment import overridden  # noqa: E402

DEFAULT_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar-100-python-vehicles.tar.gz"
STAGE = "local"
STATE_MACHINE = f"scones-unlimited-{STAGE}-image-workflow"
# serverless.yml includes resources/*.yml: the deployed copy needs both.
PROJECT_FILES = (
    "serverless.yml",
    "resources",
    "package.json",
    "handlers",
    "contract",
    "statemachine",
)
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
GOAL_EXECUTIONS_PER_SECOND = 50.0
GOAL_P50_SECONDS = 0.100
POLL_SECONDS = 0.01  # the client's DescribeExecution interval: a latency resolution of 10 ms
FIRST_POLL_SHARE = 0.8  # the first poll waits this share of the median recent duration
ENDPOINT_LATENCY_SUM = re.compile(r"^endpoint_request_duration_seconds_sum (\S+)$", re.M)
ENDPOINT_LATENCY_COUNT = re.compile(r"^endpoint_request_duration_seconds_count (\S+)$", re.M)


# --- the local stack ------------------------------------------------------------------


@dataclass
class Stack:
    """The deployed workflow: where it is, and how to reach it."""

    work: Path
    bucket: str
    endpoint_name: str
    endpoint_url: str
    aws: dict[str, str]
    keys: list[str]
    server_pid: int = 0
    endpoint_pid_file: Path | None = None

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time so far of the engine (moto's server), its Lambda workers, the endpoint's
        processes and this client process, from /proc (Linux)."""
        endpoint_pid = (
            int(self.endpoint_pid_file.read_text())
            if self.endpoint_pid_file and self.endpoint_pid_file.exists()
            else 0
        )
        times = os.times()
        return {
            "engine": _process_cpu(self.server_pid),
            "lambda": sum(_process_cpu(pid) for pid in _children(self.server_pid)),
            "endpoint": _process_cpu(endpoint_pid)
            + sum(_process_cpu(pid) for pid in _children(endpoint_pid)),
            "client": times.user + times.system,
        }

    def environment(self) -> dict[str, str]:
        return {**without_aws_variables(os.environ), **self.aws, "SLS_TELEMETRY_DISABLED": "1"}

    def client(self, service: str, **kwargs: Any) -> Any:
        from botocore.config import Config

        return local_client(self.aws, service, config=Config(max_pool_connections=64), **kwargs)

    def endpoint_latency(self) -> tuple[float, float]:
        """(seconds, requests) the endpoint has spent answering so far, from its /metrics."""
        text = requests.get(f"{self.endpoint_url}/metrics", timeout=10).text
        total = ENDPOINT_LATENCY_SUM.search(text)
        count = ENDPOINT_LATENCY_COUNT.search(text)
        if total is None or count is None:
            raise RuntimeError("the endpoint's /metrics has no request duration histogram")
        return float(total.group(1)), float(count.group(1))


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return children


def _run(stack: Stack, command: list[str], what: str, cwd: Path = REPO_ROOT) -> None:
    result = subprocess.run(
        command, cwd=cwd, env=stack.environment(), capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{result.stdout}\n{result.stderr}")


def _step(title: str, action: Callable[[], None]) -> None:
    began = time.monotonic()
    print(f"  {title} ...", end="", flush=True)
    action()
    print(f" {time.monotonic() - began:.1f}s", flush=True)


@contextmanager
def local_stack(archive: Path, model_steps: int, endpoint_workers: int) -> Iterator[Stack]:
    """Everything the workflow needs, started here and stopped on the way out."""
    with ExitStack() as cleanup:
        work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="wf-bench-")))
        endpoint_port = free_port()
        # The Lambda workers inherit the server's endpoint variables: classify reaches the
        # local endpoint through this one.
        cache = {"LOCAL_AWS_LAMBDA_CACHE": str(work / "lambda-cache")}
        server = cleanup.enter_context(
            local_aws_server(work, free_port(), endpoint_port=endpoint_port, environment=cache)
        )
        suffix = uuid.uuid4().hex[:10]
        stack = Stack(
            work=work,
            bucket=f"scones-bench-{suffix}",
            endpoint_name=f"bench-{suffix}",
            endpoint_url=endpoint_url(endpoint_port),
            aws=server.client_environment(),
            keys=[],
            server_pid=server.pid,
        )
        print("setting up the local stack:")
        stage = [sys.executable, "-m", "training_job", "stage", "--bucket", stack.bucket]
        stage += ["--source", str(archive), "--cache-dir", str(work / "cifar")]
        _step("stage the data", lambda: _run(stack, stage, "training_job stage"))
        _step("train a quick model", lambda: _put_quick_model(stack, archive, model_steps))
        state_dir = work / "endpoints"
        stack.endpoint_pid_file = state_dir / f"{stack.endpoint_name}.pid"
        deploy = [sys.executable, "-m", "training_job", "deploy", "--mode", "local"]
        deploy += ["--endpoint-name", stack.endpoint_name, "--state-dir", str(state_dir)]
        start = [*deploy, "--bucket", stack.bucket, "--port", str(endpoint_port)]
        start += ["--workers", str(endpoint_workers)]
        _step("start the local endpoint", lambda: _run(stack, start, "deploy --mode local"))
        cleanup.callback(
            subprocess.run,
            [*deploy, "--stop"],
            cwd=REPO_ROOT,
            env=stack.environment(),
            capture_output=True,
            timeout=120,
        )
        project = _copy_project(work / "project")
        sls = [str(REPO_ROOT / "node_modules" / ".bin" / "sls"), "deploy", "--stage", STAGE]
        sls += ["--param", f"bucket={stack.bucket}"]
        _step("sls deploy", lambda: _run(stack, sls, "sls deploy", cwd=project))
        manifest = stack.client("s3").get_object(Bucket=stack.bucket, Key="test.lst")
        entries = parse_lst(manifest["Body"].read().decode())
        stack.keys = [f"test/{entry.filename}" for entry in entries]
        yield stack


def _copy_project(project: Path) -> Path:
    project.mkdir()
    for name in PROJECT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, project / name)
    # osls resolves plugins from the service's node_modules, as in the repository root.
    (project / "node_modules").symlink_to(REPO_ROOT / "node_modules")
    return project


def _put_quick_model(stack: Stack, archive: Path, steps: int) -> None:
    import torch

    from tests import sample_model

    torch.set_num_threads(1)
    model_dir = sample_model.train_quick_model(archive, stack.work / "model", steps=steps)
    package = sample_model.package_model(model_dir, stack.work / "model.tar.gz")
    key = "models/bench-model/output/model.tar.gz"
    s3 = stack.client("s3")
    s3.upload_file(str(package), stack.bucket, key)
    # deploy serves only an approved version of the model registry.
    note = json.dumps({"note": f"a quick model of {steps} SGD steps, not evaluated"})
    s3.put_object(Bucket=stack.bucket, Key=key.replace("model.tar.gz", "metrics.json"), Body=note)
    models = [sys.executable, "-m", "training_job", "models"]
    register = [*models, "register", "--model-data", f"s3://{stack.bucket}/{key}"]
    register += ["--manifest", f"s3://{stack.bucket}/manifest.json"]
    _run(stack, register, "models register")
    approve = [*models, "approve", "1", "--description", "the benchmark's model"]
    _run(stack, approve, "models approve")


# --- measurements ---------------------------------------------------------------------


@dataclass
class Row:
    name: str
    concurrency: int
    executions: int
    wall_seconds: float
    client_latencies: list[float]
    server_latencies: list[float]
    task_seconds: float = 0.0  # summed over executions
    endpoint_seconds: float = 0.0  # summed over the endpoint's requests in the run
    failures: int = 0  # executions that ended in neither SUCCEEDED nor the gate's error
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process, in the run
    polls: int = 0  # DescribeExecution calls

    @property
    def per_second(self) -> float:
        return self.executions / self.wall_seconds


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def execution_of(events: list[dict[str, Any]]) -> tuple[float, float]:
    """(ExecutionStarted -> last event, time inside Task states) from an execution history."""
    server = (events[-1]["timestamp"] - events[0]["timestamp"]).total_seconds()
    return server, task_seconds_of(events)


def task_seconds_of(events: list[dict[str, Any]]) -> float:
    """Time inside Task states: from TaskScheduled to its TaskSucceeded or TaskFailed."""
    total, scheduled = 0.0, None
    for event in events:
        if event["type"] == "TaskScheduled":
            scheduled = event["timestamp"]
        elif event["type"] in ("TaskSucceeded", "TaskFailed") and scheduled is not None:
            total += (event["timestamp"] - scheduled).total_seconds()
            scheduled = None
    return total


def run_workflow(stack: Stack, concurrency: int, executions: int) -> Row:
    sfn = stack.client("stepfunctions")
    machines = sfn.list_state_machines()["stateMachines"]
    machine = next(m["stateMachineArn"] for m in machines if m["name"] == STATE_MACHINE)
    run_id = uuid.uuid4().hex[:8]
    bar = tqdm(total=executions, desc=f"workflow x{concurrency}", unit="exec", leave=False)
    recent: list[float] = [0.0]  # server-side durations of finished executions
    polls = 0

    def one(index: int) -> tuple[str, float, str]:
        nonlocal polls
        key = stack.keys[index % len(stack.keys)]
        event = {"image_data": "", "s3_bucket": stack.bucket, "s3_key": key, "inferences": []}
        sent = time.perf_counter()
        arn = sfn.start_execution(
            stateMachineArn=machine, name=f"bench-{run_id}-{index}", input=json.dumps(event)
        )["executionArn"]
        # The engine is one process that also answers the polls: the first poll waits for
        # most of the typical duration, so polling does not become the load measured.
        time.sleep(FIRST_POLL_SHARE * statistics.median(recent[-50:]))
        while True:
            described = sfn.describe_execution(executionArn=arn)
            polls += 1
            if described["status"] in TERMINAL:
                break
            time.sleep(POLL_SECONDS)
        seen = time.perf_counter() - sent
        recent.append((described["stopDate"] - described["startDate"]).total_seconds())
        bar.update(1)
        return arn, seen, described["status"] + ":" + str(described.get("error", ""))

    endpoint_before, cpu_before = stack.endpoint_latency(), stack.cpu_seconds()
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        finished = list(pool.map(one, range(executions)))
    wall = time.perf_counter() - started
    endpoint_after, cpu_after = stack.endpoint_latency(), stack.cpu_seconds()
    bar.close()
    # Histories are read after the timed window: reading them is the benchmark's work.
    results = [
        execution_of(sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"])
        for arn, _, _ in finished
    ]
    ok = ("SUCCEEDED:", "FAILED:THRESHOLD_CONFIDENCE_NOT_MET")
    return Row(
        name="workflow (Step Functions + Lambda)",
        concurrency=concurrency,
        executions=executions,
        wall_seconds=wall,
        client_latencies=[seen for _, seen, _ in finished],
        server_latencies=[server for server, _ in results],
        task_seconds=sum(tasks for _, tasks in results),
        endpoint_seconds=endpoint_after[0] - endpoint_before[0],
        failures=sum(1 for _, _, status in finished if not status.startswith(ok)),
        cpu={name: cpu_after[name] - cpu_before[name] for name in cpu_after},
        polls=polls,
    )


@contextmanager
def handler_environment(stack: Stack) -> Iterator[None]:
    """The deployed functions' variables, for calling their handlers in this process."""
    variables = {
        **stack.aws,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": stack.endpoint_url,
        "DATA_BUCKET": stack.bucket,
        "ENDPOINT_NAME": stack.endpoint_name,
    }
    with overridden(variables):
        yield


def run_reference(stack: Stack, concurrency: int, executions: int) -> Row:
    """The three handlers in sequence, in this process: what the workflow adds nothing to."""
    from handlers import classify, serialize, threshold_filter
    from handlers.errors import WorkflowError

    bar = tqdm(total=executions, desc=f"reference x{concurrency}", unit="img", leave=False)
    failures = 0
    lock = threading.Lock()

    def one(index: int) -> float:
        nonlocal failures
        key = stack.keys[index % len(stack.keys)]
        event = {"image_data": "", "s3_bucket": stack.bucket, "s3_key": key, "inferences": []}
        sent = time.perf_counter()
        try:
            threshold_filter.handler(classify.handler(serialize.handler(event)))
        except threshold_filter.THRESHOLD_CONFIDENCE_NOT_MET:
            pass
        except WorkflowError:
            with lock:
                failures += 1
        bar.update(1)
        return time.perf_counter() - sent

    # The handlers log a JSON line per call on stdout; the table is what this prints.
    with handler_environment(stack), redirect_stdout(open(os.devnull, "w")):
        one(0)  # the clients are created on the first call, as in a warm container
        endpoint_before, cpu_before = stack.endpoint_latency(), stack.cpu_seconds()
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = list(pool.map(one, range(executions)))
        wall = time.perf_counter() - started
        endpoint_after, cpu_after = stack.endpoint_latency(), stack.cpu_seconds()
    bar.close()
    return Row(
        name="reference (handlers in-process)",
        concurrency=concurrency,
        executions=executions,
        wall_seconds=wall,
        client_latencies=latencies,
        server_latencies=latencies,
        endpoint_seconds=endpoint_after[0] - endpoint_before[0],
        failures=failures,
        cpu={name: cpu_after[name] - cpu_before[name] for name in cpu_after},
    )


def warm_up(stack: Stack, concurrency: int) -> None:
    """Start the Lambda workers (cold starts are another benchmark's subject)."""
    run_workflow(stack, concurrency, concurrency * 2)


# --- the report -----------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    header = (
        "| run | concurrency | executions | exec/s | p50 ms (client) | p99 ms (client) "
        "| p50 ms (server) | p99 ms (server) | endpoint | handlers + Lambda | engine "
        "| vs reference | CPU ms/exec: engine / Lambda / endpoint / client | polls/exec |"
    )
    lines = [header, "|" + " --- |" * 2 + " ---: |" * 12]
    reference = {row.concurrency: row for row in rows if row.name.startswith("reference")}
    for row in rows:
        ms = [
            1000 * percentile(values, share)
            for values in (row.client_latencies, row.server_latencies)
            for share in (0.50, 0.99)
        ]
        total = sum(row.server_latencies)
        if row.name.startswith("workflow") and total > 0:
            endpoint = min(row.endpoint_seconds, row.task_seconds)
            shares = [
                f"{endpoint / total:.0%}",
                f"{(row.task_seconds - endpoint) / total:.0%}",
                f"{(total - row.task_seconds) / total:.0%}",
            ]
        else:
            endpoint = min(row.endpoint_seconds, total)
            shares = [f"{endpoint / total:.0%}", f"{(total - endpoint) / total:.0%}", "-"]
        cpu = " / ".join(
            f"{1000 * row.cpu.get(name, 0.0) / row.executions:.1f}"
            for name in ("engine", "lambda", "endpoint", "client")
        )
        floor = reference.get(row.concurrency)
        ratio = f"{row.per_second / floor.per_second:.2f}x" if floor else "-"
        lines.append(
            f"| {row.name} | {row.concurrency} | {row.executions} | {row.per_second:.1f} | "
            + " | ".join(f"{value:.0f}" for value in ms)
            + f" | {' | '.join(shares)} | {ratio} | {cpu} | {row.polls / row.executions:.1f} |"
        )
    return "\n".join(lines)


def verdict(rows: list[Row]) -> list[str]:
    workflow = [row for row in rows if row.name.startswith("workflow")]
    best = max(workflow, key=lambda row: row.per_second)
    p50 = min(percentile(row.client_latencies, 0.5) for row in workflow)
    failures = sum(row.failures for row in rows)
    return [
        f"- best throughput {best.per_second:.1f} exec/s at concurrency {best.concurrency} "
        f"(goal {GOAL_EXECUTIONS_PER_SECOND:.0f}): "
        + ("met" if best.per_second >= GOAL_EXECUTIONS_PER_SECOND else "NOT met"),
        f"- lowest p50 {1000 * p50:.0f} ms (goal {1000 * GOAL_P50_SECONDS:.0f} ms): "
        + ("met" if p50 < GOAL_P50_SECONDS else "NOT met"),
        f"- executions that failed for another reason than the gate: {failures}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--executions",
        type=int,
        default=200,
        help="executions per concurrency, for the workflow and the reference (default: 200)",
    )
    parser.add_argument(
        "--concurrency",
        default="1,4,16",
        help="comma-separated numbers of clients in closed loop (default: 1,4,16)",
    )
    parser.add_argument(
        "--archive",
        type=Path,
        default=DEFAULT_ARCHIVE,
        help="the CIFAR-100 python archive to stage (default: the shared vehicles archive)",
    )
    parser.add_argument(
        "--model-steps",
        type=int,
        default=60,
        help="SGD steps of the quick model served by the endpoint (default: 60)",
    )
    parser.add_argument(
        "--endpoint-workers",
        type=int,
        default=1,
        help="local endpoint server processes (default: 1)",
    )
    args = parser.parse_args(argv)
    concurrencies = [int(part) for part in args.concurrency.split(",") if part.strip()]
    if not concurrencies or min(concurrencies) < 1 or not 1 <= args.executions <= 10_000:
        parser.error("--concurrency needs positive numbers; --executions must be 1..10000")
    if not args.archive.is_file():
        parser.error(f"no archive at {args.archive} (see ../shared/data/README.md)")
    load_before = os.getloadavg()
    rows: list[Row] = []
    with local_stack(args.archive, args.model_steps, args.endpoint_workers) as stack:
        warm_up(stack, max(concurrencies))
        for concurrency in concurrencies:
            rows.append(run_reference(stack, concurrency, args.executions))
            rows.append(run_workflow(stack, concurrency, args.executions))
    load_after = os.getloadavg()
    print()
    print(table(rows))
    print()
    print(
        f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after, on "
        f"{os.cpu_count()} CPUs; shares are of the server-side execution time"
    )
    print("\n".join(verdict(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
