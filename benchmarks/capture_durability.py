"""Capture durability: requests answered 200 versus records in the S3 capture, under bad luck.

Each scenario starts its own local AWS (`python -m local_aws serve`, reached through a relay)
and a local endpoint (`python -m local_aws.endpoint`, 2 workers, capture on), drives it
with closed-loop keep-alive clients that send a unique X-Amzn-SageMaker-Inference-Id each,
with one of two kinds of body:

  png             CIFAR-100 test images, 32x32 PNGs (about 3 KB)
  phone           phone-sized JPEGs, 4032x3024 at 2 to 5 MiB (made here: a gradient
                  under film grain, never a photo from the data set)

and when a third of the requests are answered does one of:

  steady          nothing: S3 healthy all along (capture must keep up with the endpoint)
  worker-kill-9   kill -9 of one worker (the endpoint restarts it)
  group-kill-9    kill -9 of the endpoint's whole process group, then a fresh start
                  on the same spool (the load stops: nothing is listening)
  sigterm         SIGTERM of the endpoint under load (the load stops when refused)
  s3-outage       S3 unreachable for --outage-seconds: the endpoint reaches the local
                  AWS through a TCP relay, which then refuses connections and resets
                  the open ones

then stops the endpoint with SIGTERM and counts, by inference id, how many answered
requests are in the capture (lost = answered but not captured; duplicates = captured twice).
The last table is the spool's append cost with and without an fsync per record.

    .venv/bin/python benchmarks/capture_durability.py [--requests 1800] [--clients 16]
        [--phone-requests 160] [--bodies png phone]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import requests
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from local_aws.endpoint.background import RunningEndpoint, local_endpoint  # noqa: E402
from local_aws.server import endpoint_url as local_url  # noqa: E402
from local_aws.server import free_port, local_aws_server, local_client  # noqa: E402
from tests import sample_model  # noqa: E402
from training_job.serving import capture  # noqa: E402

DEFAULT_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar-100-python-vehicles.tar.gz"
from contract.images import MAX_IMAGE_BYTES  # noqa: E402

SCENARIOS = ("steady", "worker-kill-9", "group-kill-9", "sigterm", "s3-outage")
BODIES = ("png", "phone")
CONTENT_TYPES = {"png": "image/png", "phone": "image/jpeg"}
PHONE_GRAIN = (6.0, 9.0, 13.0)  # the grain's strength sets the JPEG's size: 2.4-4.4 MiB


class Relay:
    """A TCP relay to `upstream_port` on loopback that can be cut (connections refused,
    open ones reset) and restored on the same port."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        # close() alone leaves the socket listening while accept() blocks in the relay's
        # thread (Linux): the next connection would still get through. shutdown() stops
        # the listening and wakes accept().
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


@contextmanager
def local_aws(log_dir: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """A local AWS of this run's own; yields its port and client environment."""
    with local_aws_server(log_dir, free_port()) as server:
        yield server.port, server.client_environment()


@dataclass
class Endpoint:
    """`python -m local_aws.endpoint` (local_endpoint) on one spool directory, started and
    stopped as the scenario says; its pid and log files are NAME.* in `state_dir`."""

    name: str
    model_dir: Path
    spool_dir: Path
    bucket: str
    environment: dict[str, str]
    state_dir: Path
    port: int = field(default_factory=free_port)
    running: RunningEndpoint | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        options = [
            "--endpoint-name", self.name, "--workers", "2", "--torch-threads", "1",
            "--capture-bucket", self.bucket, "--capture-spool-dir", str(self.spool_dir),
            "--capture-flush-seconds", "0.5",
        ]  # fmt: skip
        self.running = self._stack.enter_context(
            local_endpoint(
                self.model_dir,
                self.state_dir,
                options,
                name=self.name,
                port=self.port,
                environment=self.environment,
            )
        )

    def wait_until_every_worker_serves(self) -> None:
        """`/ping` answers once one worker serves; the scenario's disruption is meant for
        a worker that answers traffic, so wait for the server's line that all of them do
        (a bounded wait: the scenario fails on its own counts if it never comes)."""
        assert self.running is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if f"serving on {self.url}" in self.running.log_file.read_text(errors="replace"):
                return
            time.sleep(0.1)

    def workers(self) -> list[int]:
        assert self.running is not None
        pid = self.running.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        # multiprocessing's resource tracker is a child too; workers are named by the module
        return [
            int(child)
            for child in children
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()
        ]

    def stop(self) -> float:
        """SIGTERM and wait for every process of it to exit; the seconds that took."""
        started = time.monotonic()
        self._stack.close()
        return time.monotonic() - started

    def put_failures(self) -> int:
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("endpoint_capture_put_failures_total "):
                return int(float(line.split()[1]))
        raise RuntimeError("no endpoint_capture_put_failures_total in /metrics")

    def kill_group(self) -> None:
        assert self.running is not None
        os.killpg(self.running.pid, signal.SIGKILL)


@dataclass
class Load:
    """Closed-loop keep-alive clients; each request carries a unique inference id."""

    url: str
    name: str
    bodies: list[bytes]
    content_type: str
    total: int
    clients: int
    answered: list[str] = field(default_factory=list)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _issued: int = 0

    def _next(self) -> int | None:
        with self._lock:
            if self.stop.is_set() or self._issued >= self.total:
                return None
            self._issued += 1
            return self._issued

    def _client(self) -> None:
        session = requests.Session()
        while (number := self._next()) is not None:
            inference_id = f"{self.name}-{number}-{uuid.uuid4().hex[:6]}"
            try:
                response = session.post(
                    f"{self.url}/endpoints/{self.name}/invocations",
                    data=self.bodies[number % len(self.bodies)],
                    headers={
                        "Content-Type": self.content_type,
                        "X-Amzn-SageMaker-Inference-Id": inference_id,
                    },
                    timeout=60,
                )
            except requests.RequestException as error:
                with self._lock:
                    self.statuses[type(error).__name__] += 1
                continue
            with self._lock:
                self.statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    self.answered.append(inference_id)

    def run(self, at_third: Callable[[], None], stop_on_errors: bool) -> None:
        threads = [threading.Thread(target=self._client) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        while len(self.answered) < self.total // 3 and any(t.is_alive() for t in threads):
            time.sleep(0.01)
        at_third()
        if stop_on_errors:
            # Nothing answers any more (or only refusals): stop once the errors show it.
            while any(t.is_alive() for t in threads):
                with self._lock:
                    failures = sum(n for s, n in self.statuses.items() if s != "200")
                if failures >= self.clients:
                    self.stop.set()
                time.sleep(0.01)
        for thread in threads:
            thread.join()


def captured_ids(environment: dict[str, str], bucket: str, name: str) -> collections.Counter[str]:
    s3 = local_client(environment, "s3")
    ids: collections.Counter[str] = collections.Counter()
    prefix = f"{capture.CAPTURE_PREFIX}/{name}/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for line in body.splitlines():
                ids[capture.parse_line(line).inference_id or ""] += 1
    return ids


@dataclass(frozen=True)
class Result:
    scenario: str
    answered: int
    captured: int  # of the answered
    lost: int
    duplicates: int
    put_failures: int  # S3 writes that failed (and were retried) during the scenario
    statuses: dict[str, int]
    stop_seconds: float


def run_scenario(
    scenario: str,
    model_dir: Path,
    bodies: list[bytes],
    work: Path,
    total: int,
    clients: int,
    outage_seconds: float = 6.0,
    content_type: str = "image/png",
) -> Result:
    """One scenario end to end, with a local AWS and an endpoint of its own."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
    work.mkdir(parents=True, exist_ok=True)
    with local_aws(work) as (aws_port, environment):
        bucket = f"durability-{uuid.uuid4().hex[:12]}"
        local_client(environment, "s3").create_bucket(Bucket=bucket)
        name = f"{scenario}-{uuid.uuid4().hex[:6]}"
        relay = Relay(aws_port)
        endpoint = Endpoint(
            name,
            model_dir,
            work / f"{name}-spool",
            bucket,
            {**environment, "AWS_ENDPOINT_URL": local_url(relay.port)},
            work,
        )
        endpoint.start()
        endpoint.wait_until_every_worker_serves()
        load = Load(endpoint.url, name, bodies, content_type, total, clients)
        put_failures = -1  # not measured where the scenario itself stops the endpoint
        stopped: list[float] = []  # seconds from SIGTERM to the endpoint's exit
        outage = threading.Timer(outage_seconds, relay.restore)

        def act() -> None:
            if scenario == "worker-kill-9":
                os.kill(endpoint.workers()[0], signal.SIGKILL)
            elif scenario == "group-kill-9":
                endpoint.kill_group()
            elif scenario == "sigterm":
                threading.Thread(target=lambda: stopped.append(endpoint.stop())).start()
            elif scenario == "s3-outage":
                relay.cut()
                outage.start()

        load.run(act, stop_on_errors=scenario in ("group-kill-9", "sigterm"))
        if scenario == "s3-outage":
            outage.join()  # S3 is back before the endpoint is stopped
        if scenario == "group-kill-9":
            endpoint.stop()  # nothing left to stop: once every process has let go of its name
            endpoint.start()  # the same spool: its first act is to ship what is left
        if scenario == "sigterm":
            while not stopped:  # the thread stopping it records when every process exited
                time.sleep(0.01)
        else:
            put_failures = endpoint.put_failures()
            stopped.append(endpoint.stop())
        found = captured_ids(environment, bucket, name)
    answered = set(load.answered)
    return Result(
        scenario=scenario,
        answered=len(answered),
        captured=len(answered & set(found)),
        lost=len(answered - set(found)),
        duplicates=sum(count - 1 for count in found.values() if count > 1),
        put_failures=put_failures,
        statuses=dict(load.statuses),
        stop_seconds=stopped[0],
    )


def append_cost(directory: Path, records: int, line: bytes) -> dict[str, float]:
    """Microseconds per spooled record: one write, and one write plus fsync."""
    costs = {}
    for mode in ("write", "write+fsync"):
        path = directory / f"append-{mode}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        started = time.perf_counter()
        for _ in range(records):
            os.write(fd, line)
            if mode == "write+fsync":
                os.fsync(fd)
        costs[mode] = (time.perf_counter() - started) / records * 1e6
        os.close(fd)
        path.unlink()
    return costs


def phone_photo(grain: float, seed: int) -> bytes:
    """A 4032x3024 JPEG (a 12 MP phone camera's) of a colour gradient under Gaussian grain;
    stronger grain compresses less, so `grain` sets the size (6: 2.4 MiB, 13: 4.4 MiB)."""
    height, width, tile = 3024, 4032, 504  # the grain is a tile repeated: cheap to make
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    scene = np.stack(
        np.broadcast_arrays(200 * x + 40 * y, 120 + 80 * y + 0 * x, 220 - 150 * x * y), axis=-1
    )
    noise = np.random.default_rng(seed).normal(0, grain, (tile, tile, 3)).astype(np.float32)
    pixels = np.clip(scene + np.tile(noise, (height // tile, width // tile, 1)), 0, 255)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def phone_photos() -> list[bytes]:
    photos = [phone_photo(grain, seed) for seed, grain in enumerate(PHONE_GRAIN)]
    for photo in photos:
        if not 2 * 1024 * 1024 <= len(photo) < MAX_IMAGE_BYTES:
            raise RuntimeError(f"a phone photo of {len(photo)} bytes is not 2 to 5 MiB")
    return photos


def prepare_model(archive: Path, work: Path) -> tuple[Path, list[bytes]]:
    model_dir = sample_model.train_quick_model(archive, work / "model", steps=3)
    images, _labels = sample_model.load_split(archive, "test")
    return model_dir, [sample_model.png_bytes(image) for image in images]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--requests", type=int, default=1800, help="per scenario, png bodies")
    parser.add_argument(
        "--phone-requests", type=int, default=160, help="per scenario, phone bodies"
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--outage-seconds", type=float, default=6.0)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--bodies", nargs="+", choices=BODIES, default=list(BODIES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capture-durability-") as scratch:
        work = Path(scratch)
        model_dir, pngs = prepare_model(args.archive, work)
        bodies = {"png": pngs, "phone": phone_photos() if "phone" in args.bodies else []}
        totals = {"png": args.requests, "phone": args.phone_requests}
        results = [
            (
                kind,
                run_scenario(
                    scenario,
                    model_dir,
                    bodies[kind],
                    work / f"{scenario}-{kind}",
                    totals[kind],
                    args.clients,
                    args.outage_seconds,
                    CONTENT_TYPES[kind],
                ),
            )
            for kind in args.bodies
            for scenario in args.scenarios
        ]
        record = capture.encode_lines(
            [
                capture.build_record(
                    input_body=pngs[0],
                    input_content_type="image/png",
                    output_body=b"[0.97, 0.03]",
                    output_content_type="application/json",
                    inference_time=datetime.now(UTC),
                )
            ]
        )
        costs = append_cost(work, 2000, record)
    sizes = {k: f"{min(map(len, b)):,}-{max(map(len, b)):,} B" for k, b in bodies.items() if b}
    print(
        f"\n{args.clients} keep-alive clients, 2 workers; requests per scenario: "
        + ", ".join(f"{kind} {totals[kind]} ({sizes[kind]})" for kind in args.bodies)
    )
    print(
        f"{'scenario':<15}{'bodies':<7}{'answered':>9}{'captured':>9}{'lost':>6}{'dupes':>6}"
        f"{'S3 fails':>9}{'stop s':>8}  other"
    )
    for kind, result in results:
        others = ", ".join(f"{k}:{v}" for k, v in sorted(result.statuses.items()) if k != "200")
        print(
            f"{result.scenario:<15}{kind:<7}{result.answered:>9}{result.captured:>9}"
            f"{result.lost:>6}{result.duplicates:>6}"
            f"{result.put_failures if result.put_failures >= 0 else '-':>9}"
            f"{result.stop_seconds:>8.2f}"
            f"  {others or '-'}"
        )
    print(f"\nspool append, {len(record)}-byte record: " + ", ".join(
        f"{mode} {micros:.0f} us" for mode, micros in costs.items()
    ))  # fmt: skip
    return 0 if all(result.lost == 0 for _, result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
