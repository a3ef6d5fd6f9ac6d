"""The local endpoint's processes: a supervisor, `workers` server processes, and each
worker's variant containers.

Each worker serves every variant of the routing, each variant's model in a process of
its own that runs that version's own inference script (container.py, as SageMaker runs
each variant in its own containers); it binds the same address with
SO_REUSEPORT (the kernel spreads connections among them) and serves until SIGTERM, when
it stops accepting, answers the requests it has read, refuses the rest cleanly
(`connections.py`), and ships its capture spool. The supervisor starts the workers,
restarts one that dies, and on SIGTERM or Ctrl-C stops them all the same way.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from local_aws.endpoint.config import EndpointConfig
from local_aws.endpoint.metrics import Slot, WorkerMetrics, allocate_slots
from local_aws.supervisor import check_port_free

log = logging.getLogger("local_aws.endpoint")

READY_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 60.0  # a worker that has not stopped by then is killed
STOP_GRACE_SECONDS = 5.0  # for the requests a worker holds at SIGTERM


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(processName)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def _serve_worker(
    config: EndpointConfig, slots: Sequence[Slot], index: int, ready: Any
) -> None:
    from aiohttp import web

    from local_aws.endpoint.app import EndpointApp
    from local_aws.endpoint.capture_writer import CaptureWriter
    from local_aws.endpoint.connections import Connections
    from local_aws.endpoint.container import VariantContainer
    from local_aws.endpoint.routing import VariantPool

    metrics = WorkerMetrics(slots[index])

    def container(model_dir: Path) -> VariantContainer:
        return VariantContainer(
            model_dir,
            max_batch=config.max_batch,
            max_wait_seconds=config.max_batch_wait_ms / 1000,
            max_queue=config.max_queue,
            metrics=metrics,
            runners=config.threads_per_worker(),
        )

    variants = VariantPool(config.routing_dir(), container, metrics)
    writers: dict[str, CaptureWriter] = {}  # per variant; kept until the worker stops

    def capture(variant: str) -> CaptureWriter | None:
        if not (config.capture_bucket and config.capture_sampling > 0):
            return None
        if variant not in writers:
            writers[variant] = CaptureWriter(
                config.capture_bucket,
                config.endpoint_name,
                spool_dir=config.spool_dir(variant),
                flush_seconds=config.capture_flush_seconds,
                spool_bytes=config.capture_spool_bytes,
                metrics=metrics,
                variant=variant,
            )
        return writers[variant]

    # Writers ship what an earlier run left, at once: the starting variant's and every
    # variant's that an earlier run's rollout served.
    capture(config.variant_name)
    others = config.spool_dir(config.variant_name) / "variants"
    for leftover in sorted(others.iterdir()) if others.is_dir() else []:
        capture(leftover.name)
    endpoint = EndpointApp(config, variants, capture, metrics, slots)
    app = endpoint.build()
    connections = Connections(app, metrics, header_timeout_seconds=config.header_timeout_seconds)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        connections.protocol_factory(runner.server, loop),
        config.host,
        config.port,
        reuse_address=True,
        reuse_port=True,  # the workers share the port; the kernel spreads connections
        backlog=1024,
    )
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    ready.put(index)
    watch = asyncio.create_task(_stop_when_orphaned(stopping))
    follow = asyncio.create_task(variants.follow(stopping))
    await stopping.wait()
    watch.cancel()
    await follow
    # Stop accepting, answer every request already read (the batcher still runs), close
    # idle connections and refuse new requests on open ones with 503 + Retry-After,
    # within STOP_GRACE_SECONDS; then the spool is shipped (what S3 does not take in
    # time waits for the next start).
    listener.close()
    await connections.drain(STOP_GRACE_SECONDS)
    await runner.cleanup()
    await asyncio.gather(*endpoint.shadow_tasks, return_exceptions=True)
    await variants.stop()
    # Together: each writer's close is bounded (CLOSE_SHIP_SECONDS), and so is all of it.
    await asyncio.gather(*(asyncio.to_thread(writer.close) for writer in writers.values()))


async def _stop_when_orphaned(stopping: asyncio.Event) -> None:
    """A worker whose supervisor was killed (kill -9) shuts down cleanly on its own."""
    supervisor = os.getppid()
    while os.getppid() == supervisor:
        await asyncio.sleep(1.0)
    log.warning("the supervisor is gone; stopping")
    stopping.set()


def run_worker(config: EndpointConfig, slots: Sequence[Slot], index: int, ready: Any) -> None:
    """A worker process's entry point."""
    _configure_logging()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us
    import torch

    # The worker's cores each run a batch of their own (the model server's runners).
    torch.set_num_threads(1)
    asyncio.run(_serve_worker(config, slots, index, ready))
    # Everything is answered and shipped; the interpreter's own teardown (torch's above
    # all) took seconds on a busy machine and only delayed the stop.
    logging.shutdown()
    os._exit(0)


def _wait_until_ready(processes: list[BaseProcess], ready: Any, stopping: threading.Event) -> bool:
    """Until every worker serves. A worker that dies before any serves fails the start (the
    model or its code does not load); one that dies once another already answers traffic
    was killed or crashed on its own, and the supervising loop restarts it, as it does
    for a worker that dies later: the serving ones must not be stopped for it."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    started = 0
    while started < len(processes):
        if stopping.is_set() or time.monotonic() > deadline:
            return False
        if not all(process.is_alive() for process in processes):
            return started > 0
        try:
            ready.get(timeout=0.2)
        except queue.Empty:
            continue
        started += 1
    return True


def serve(config: EndpointConfig) -> int:
    """Serve in the foreground until SIGTERM or Ctrl-C; returns the exit code."""
    _configure_logging()
    check_port_free(config.host, config.port)
    from local_aws.endpoint import routing

    # Every start serves the deployed model alone, as a new SageMaker endpoint does.
    routing.write_initial(config.routing_dir(), config.variant_name, config.model_dir.resolve())
    context = multiprocessing.get_context("spawn")  # fork after torch's threads is unsafe
    slots = allocate_slots(config.workers)
    ready = context.Queue()

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=run_worker,
            args=(config, slots, index, ready),
            name=f"worker-{index}",
            daemon=False,
        )
        process.start()
        return process

    stopping = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stopping.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    processes = [start(index) for index in range(config.workers)]
    if not _wait_until_ready(processes, ready, stopping):
        log.error("the workers did not start; see the errors above")
        stopping.set()
    else:
        print(
            f"endpoint {config.endpoint_name} serving on http://{config.host}:{config.port} "
            f"({config.workers} worker(s), {config.threads_per_worker()} torch thread(s) each)",
            flush=True,
        )
    exit_code = 0 if not stopping.is_set() else 1
    while not stopping.wait(1.0):
        for index, process in enumerate(processes):
            if not process.is_alive():
                log.warning("worker %d exited with %s; restarting it", index, process.exitcode)
                processes[index] = start(index)
    for process in processes:
        if process.is_alive() and process.pid is not None:
            process.terminate()  # SIGTERM: the worker's clean shutdown
    for process in processes:
        process.join(STOP_TIMEOUT_SECONDS)
        if process.is_alive():
            log.error(
                "worker %s did not stop in %.0fs; killing it", process.name, STOP_TIMEOUT_SECONDS
            )
            process.kill()
            process.join()
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    log.info("endpoint %s stopped", config.endpoint_name)
    return exit_code
