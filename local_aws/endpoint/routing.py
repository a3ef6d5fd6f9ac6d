"""The local endpoint's variants: which models answer, in what shares, and which one
answers copies nobody sees (the shadow).

SageMaker routes each InvokeEndpoint to one production variant by weight (or to the
caller's TargetVariant), says which in `X-Amzn-Invoked-Production-Variant`, and sends a
copy to the shadow variant, whose answer is captured and metered but never returned.
During a blue/green deployment it keeps the old fleet and the new one side by side and
shifts a share of the traffic to the new one; a variant name may then be served by two
models (the old fleet's and the new one's), which is why a route is (variant, model).

The routing lives in one file per endpoint (`routing.json` in the endpoint's routing
directory), written atomically, with a generation number:

    {"generation": 3,
     "routes": [{"variant": "v1", "model_dir": "/abs/model", "weight": 0.9},
                {"variant": "v2", "model_dir": "/abs/models/ab12...", "weight": 0.1}],
     "shadow": {"variant": "v3", "model_dir": "/abs/models/cd34...", "weight": 1.0} | null,
     "positions": ["v1", "v2", "v3"]}

The server writes generation 0 (its own model, one variant) at start. The local AWS
changes it through the endpoint's control route (app.py, `PUT /_local/routing`: the
worker that receives it downloads the models and starts their containers first, and
refuses a model that does not load); every worker polls the file, loads the models it
lacks (each in a container process of its own, container.py: its own code, its own
model), then switches its routing in one assignment, so a request is
answered by the routing it started with. A model no route uses any more is closed once
its last request is answered: a switch loses and fails no request. `positions` gives each
variant name its block of counters (metrics.py), kept across generations.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contract.sagemaker_names import NAME_PATTERN
from local_aws.endpoint.container import ContainerFailed, VariantContainer
from local_aws.endpoint.metrics import MAX_VARIANTS, Slot, WorkerMetrics, reset_variant

log = logging.getLogger(__name__)

ROUTING_FILE = "routing.json"
POLL_SECONDS = 0.2
MAX_ROUTES = 10  # SageMaker's production variants per endpoint configuration


class RoutingError(ValueError):
    """A routing document that cannot be served (the control route answers 400)."""


@dataclass(frozen=True)
class Route:
    variant: str
    model_dir: str
    weight: float = 1.0


@dataclass(frozen=True)
class Routing:
    generation: int
    routes: tuple[Route, ...]
    shadow: Route | None = None
    positions: tuple[str, ...] = field(default=())

    def position(self, variant: str) -> int:
        return self.positions.index(variant)

    def variants(self) -> list[str]:
        """Production variant names, each once, in route order."""
        return list(dict.fromkeys(route.variant for route in self.routes))

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "routes": [asdict(route) for route in self.routes],
            "shadow": asdict(self.shadow) if self.shadow else None,
            "positions": list(self.positions),
        }


def _route(document: Any, what: str) -> Route:
    if not isinstance(document, dict):
        raise RoutingError(f"{what} must be an object")
    variant, model_dir = document.get("variant"), document.get("model_dir")
    weight = document.get("weight", 1.0)
    if not isinstance(variant, str) or not NAME_PATTERN.match(variant):
        raise RoutingError(f"{what}: variant must be a SageMaker variant name, got {variant!r}")
    if not isinstance(model_dir, str) or not model_dir:
        raise RoutingError(f"{what}: model_dir must be a path")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
        raise RoutingError(f"{what}: weight must be a number >= 0, got {weight!r}")
    return Route(variant, model_dir, float(weight))


def parse(document: Any) -> Routing:
    """A routing document, checked: 1-10 routes with a positive total weight, one shadow
    at most, whose name no production variant uses."""
    if not isinstance(document, dict):
        raise RoutingError("the routing must be a JSON object")
    routes = document.get("routes")
    if not isinstance(routes, list) or not 1 <= len(routes) <= MAX_ROUTES:
        raise RoutingError(f"routes must be a list of 1 to {MAX_ROUTES} routes")
    parsed = tuple(_route(route, f"routes[{index}]") for index, route in enumerate(routes))
    if sum(route.weight for route in parsed) <= 0:
        raise RoutingError("the routes' weights must not all be 0")
    shadow_document = document.get("shadow")
    shadow = _route(shadow_document, "shadow") if shadow_document is not None else None
    if shadow is not None and shadow.variant in {route.variant for route in parsed}:
        raise RoutingError(f"shadow variant {shadow.variant} is also a production variant")
    generation = document.get("generation", 0)
    positions = document.get("positions", [])
    if not isinstance(generation, int) or not isinstance(positions, list):
        raise RoutingError("generation must be an integer and positions a list")
    return Routing(generation, parsed, shadow, tuple(str(name) for name in positions))


def routing_file(routing_dir: Path) -> Path:
    return routing_dir / ROUTING_FILE


def read(routing_dir: Path) -> Routing:
    return parse(json.loads(routing_file(routing_dir).read_text()))


def _write(routing_dir: Path, routing: Routing) -> None:
    path = routing_file(routing_dir)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(routing.to_json()))
    partial.replace(path)  # atomic: a worker reads the old routing or the new one


@contextmanager
def _locked(routing_dir: Path) -> Iterator[None]:
    routing_dir.mkdir(parents=True, exist_ok=True)
    with open(routing_dir / "routing.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write_initial(routing_dir: Path, variant: str, model_dir: Path) -> Routing:
    """Generation 0: the endpoint's own model as its one variant (at every start)."""
    routing = Routing(0, (Route(variant, str(model_dir), 1.0),), None, (variant,))
    with _locked(routing_dir):
        _write(routing_dir, routing)
    return routing


def replace(
    routing_dir: Path, routes: Sequence[Route], shadow: Route | None, slots: Sequence[Slot]
) -> Routing:
    """Publish new routes as the next generation; a variant name new to this endpoint
    takes a free counter position, or the oldest one no current variant uses (zeroed)."""
    with _locked(routing_dir):
        current = read(routing_dir)
        candidate = parse(
            {
                "generation": current.generation + 1,
                "routes": [asdict(route) for route in routes],
                "shadow": asdict(shadow) if shadow else None,
                "positions": list(current.positions),
            }
        )
        positions = list(current.positions)
        in_use = {*candidate.variants(), *([shadow.variant] if shadow else [])}
        for name in sorted(in_use - set(positions)):
            if len(positions) < MAX_VARIANTS:
                positions.append(name)
                continue
            free = next((i for i, old in enumerate(positions) if old not in in_use), None)
            if free is None:
                raise RoutingError(f"more than {MAX_VARIANTS} variants at once")
            reset_variant(slots, free)
            positions[free] = name
        routing = Routing(candidate.generation, candidate.routes, shadow, tuple(positions))
        _write(routing_dir, routing)
    return routing


def model_dir_for(routing_dir: Path, model_data: str) -> Path:
    """Where a model archive is unpacked: one folder per S3 URI."""
    digest = hashlib.sha256(model_data.encode()).hexdigest()[:16]
    return routing_dir / "models" / digest


def download_model(routing_dir: Path, model_data: str) -> Path:
    """Download and unpack `model_data` (s3://) once, with this process's credentials (the
    execution role's when the endpoint was deployed with --role, as SageMaker reads it)."""
    import tempfile

    import boto3

    from training_job.models import archive as model_archive
    from training_job.serving.deployment import split_s3_uri

    destination = model_dir_for(routing_dir, model_data)
    if (destination / "model.pth").is_file():
        return destination
    bucket, key = split_s3_uri(model_data)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        archive = Path(scratch) / "model.tar.gz"
        boto3.client("s3").download_file(bucket, key, str(archive))
        unpacked = model_archive.extract_model(archive, Path(scratch) / "model")
        try:
            os.rename(unpacked, destination)
        except OSError:  # another request unpacked the same archive meanwhile
            if not (destination / "model.pth").is_file():
                raise
    return destination


class VariantPool:
    """One worker's models (a VariantContainer each: the variant's own process, code and
    model) and the routing it serves now."""

    def __init__(self, routing_dir: Path, make_batcher: Any, metrics: WorkerMetrics) -> None:
        self.routing_dir = routing_dir
        self.make_batcher = make_batcher  # model_dir -> VariantContainer (started)
        self.metrics = metrics
        self.batchers: dict[str, VariantContainer] = {}
        self.in_flight: dict[str, int] = {}
        self.preloaded: set[str] = set()  # loaded for a routing not applied yet: kept open
        self.routing = read(routing_dir)
        self._mtime = 0.0
        for route in self._all_routes(self.routing):
            self._load(route.model_dir)
        metrics.set_generation(self.routing.generation)

    @staticmethod
    def _all_routes(routing: Routing) -> list[Route]:
        return [*routing.routes, *([routing.shadow] if routing.shadow else [])]

    def _load(self, model_dir: str) -> VariantContainer:
        if model_dir not in self.batchers:
            batcher = self.make_batcher(Path(model_dir))
            batcher.start()
            self.batchers[model_dir] = batcher
            self.in_flight[model_dir] = 0
        return self.batchers[model_dir]

    async def preload(self, routes: Sequence[Route]) -> None:
        """Start the containers of the models a routing about to be published needs, so
        that a version whose code or weights do not load is refused before any worker
        switches, as SageMaker fails a deployment whose new containers never pass their
        ping health check (container.ContainerFailed, naming the variant)."""
        for route in routes:
            if route.model_dir not in self.batchers:
                try:
                    batcher = await asyncio.to_thread(self.make_batcher, Path(route.model_dir))
                except ContainerFailed as error:
                    raise ContainerFailed(
                        f"The primary container for production variant {route.variant} did "
                        f"not pass the ping health check: {error}"
                    ) from error
                batcher.start()
                self.batchers[route.model_dir] = batcher
                self.in_flight[route.model_dir] = 0
            self.preloaded.add(route.model_dir)

    def release(self, model_dirs: Sequence[str]) -> None:
        """Preloaded models whose routing was not published: closed when idle."""
        self.preloaded.difference_update(model_dirs)

    def choose(self, target_variant: str | None) -> Route | None:
        """A production route by weight, or one of `target_variant`'s (None: no such
        variant). A TargetVariant with weight 0 is still served, as SageMaker does."""
        routes = list(self.routing.routes)
        if target_variant is not None:
            routes = [route for route in routes if route.variant == target_variant]
            if not routes:
                return None
        weights = [route.weight for route in routes]
        if sum(weights) <= 0:
            weights = [1.0] * len(routes)
        return random.choices(routes, weights)[0]

    @contextmanager
    def serving(self, route: Route) -> Iterator[VariantContainer]:
        """The route's batcher, counted as busy so a switch does not close it under us."""
        self.in_flight[route.model_dir] += 1
        try:
            yield self.batchers[route.model_dir]
        finally:
            self.in_flight[route.model_dir] -= 1

    async def follow(self, stopping: asyncio.Event) -> None:
        """Poll the routing file and switch to each new generation once its models load."""
        while not stopping.is_set():
            try:
                await self._refresh()
            except Exception as error:  # a bad file or a model that fails to load
                log.error("routing not applied: %s", error)
            await self._close_idle()
            with suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), POLL_SECONDS)

    async def _refresh(self) -> None:
        mtime = routing_file(self.routing_dir).stat().st_mtime
        if mtime == self._mtime:
            return
        routing = await asyncio.to_thread(read, self.routing_dir)
        self._mtime = mtime
        if routing.generation == self.routing.generation:
            return
        for route in self._all_routes(routing):
            if route.model_dir not in self.batchers:
                batcher = await asyncio.to_thread(self.make_batcher, Path(route.model_dir))
                batcher.start()
                self.batchers[route.model_dir] = batcher
                self.in_flight[route.model_dir] = 0
        self.routing = routing  # one assignment: requests from here on use the new routes
        self.release([route.model_dir for route in self._all_routes(routing)])
        self.metrics.set_generation(routing.generation)
        log.info(
            "routing generation %d: %s%s",
            routing.generation,
            ", ".join(f"{route.variant}={route.weight:g}" for route in routing.routes),
            f", shadow {routing.shadow.variant}" if routing.shadow else "",
        )

    async def _close_idle(self) -> None:
        used = {route.model_dir for route in self._all_routes(self.routing)}
        idle = [name for name in self.batchers if name not in used | self.preloaded]
        for model_dir in idle:
            if self.in_flight[model_dir] == 0:
                batcher = self.batchers.pop(model_dir)
                del self.in_flight[model_dir]
                await batcher.stop()

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()
