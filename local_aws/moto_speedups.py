"""Changes to moto (and botocore) for speed only: what the local AWS answers stays the
same, only sooner. Each is one function, installed by local_aws/moto_patches.py before the
server takes its first request, except `answer_own_requests_in_process`, which needs the
running server's application (`local_aws.server.serve` installs it). The measurements:
docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit


def cache_moto_module_list() -> None:
    """Speed: moto's dispatcher lists its own package folder (a listdir and ~190 stats)
    twice per request, holding the lock every request passes through, so under load the
    requests queue behind it. The folders cannot change while the server runs."""
    import functools

    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = functools.cache(lambda: modules)


def reuse_parsed_state_machines() -> None:
    """Speed: moto parses the state machine's definition (an ANTLR grammar in pure Python)
    on every execution, the largest part of the engine's own CPU per execution. Parse once
    per definition.

    An execution keeps its state in its own `Environment` (the retriers' attempt counts
    live in `env.heap`, under each component's `heap_key`), not in the parsed components,
    so executions can share one parsed program, as long as nothing sets an attribute on
    a component while it runs: the one lazy attribute (`heap_key`) is set here, before the
    program is shared, and Map and Parallel states (whose pools and run records are made
    while they run) get a deep copy per execution, as every program did before. A deep
    copy cost a fifth of the engine's CPU per execution (docs/benchmarks.md)."""
    import copy
    import functools

    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    @functools.lru_cache(maxsize=64)
    def parsed(definition: str) -> tuple[Any, bool]:
        program = AmazonStateLanguageParser.parse(definition)[0]
        return program, prepare_for_sharing(program)

    def evaluation_entrypoint(self: ExecutionWorker) -> Any:
        definition = self._evaluation_details.state_machine_details.definition
        program, shared = parsed(definition)
        if shared:
            return program
        try:
            return copy.deepcopy(program)
        except (TypeError, copy.Error):  # a component that cannot be copied: parse afresh
            return AmazonStateLanguageParser.parse(definition)[0]

    ExecutionWorker._get_evaluation_entrypoint = evaluation_entrypoint  # type: ignore[method-assign]


def prepare_for_sharing(program: Any) -> bool:
    """Set every component's lazy `heap_key` of a parsed program, and say whether
    executions may share it: not when it has a Map or Parallel state."""
    from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap
    from moto.stepfunctions.parser.asl.component.state.exec.state_parallel.state_parallel import (
        StateParallel,
    )

    shareable = True
    for component in components_of(program):
        if isinstance(component, (StateMap, StateParallel)):
            shareable = False
        if isinstance(component, EvalComponent):
            _ = component.heap_key
    return shareable


def components_of(program: Any) -> Iterator[Any]:
    """Every component of a parsed ASL program, each once: the program, its states and
    all they hold (in attributes, lists and dicts)."""
    from moto.stepfunctions.parser.asl.component.component import Component

    seen: set[int] = set()
    pending: list[Any] = [program]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, Component):
            yield item
            pending.extend(vars(item).values())


def cache_response_method_names() -> None:
    """Speed: moto lists a response class's methods (`inspect.getmembers`) on every
    request to see whether the action is one of them, ~2% of the engine's CPU. The
    classes do not change once the server runs (every patch is installed before it
    starts): list each class once."""
    import functools

    from moto.core import responses

    listing = responses.method_names_from_class

    @functools.cache
    def method_names(clazz: type) -> frozenset[str]:
        return frozenset(listing(clazz))

    responses.method_names_from_class = method_names  # type: ignore[assignment]


def reuse_parsed_json_paths() -> None:
    """Speed: jsonpath_ng's `parse` builds a new PLY parser (its LALR tables included)
    for every expression, and moto's interpreter parses each state's InputPath, OutputPath
    and ResultPath on every state of every execution: about 5 parser builds an execution.
    An expression parses to the same immutable tree every time; parse each once."""
    import functools

    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.utils import json_path

    json_path.parse = functools.lru_cache(maxsize=1024)(json_path.parse)
    result_path.parse = functools.lru_cache(maxsize=1024)(result_path.parse)


def answer_own_requests_in_process(app: Any, host: str, port: int) -> None:
    """Speed: the local AWS calls itself. Step Functions' interpreter reaches Lambda (and
    any other service a task calls) through a boto3 client at this server's own address,
    so each task paid for a loopback connection, a server thread and werkzeug's HTTP
    parsing on top of the request itself. A botocore `before-send` handler now hands a
    request addressed to this server straight to the same WSGI application the socket
    feeds, with the environ werkzeug's server would build: the request is still
    serialized, signed (and its signature checked), routed, authorized against the
    caller's role and answered by the same code; only the socket is skipped."""
    import io

    from botocore.awsrequest import AWSPreparedRequest, AWSResponse
    from botocore.handlers import BUILTIN_HANDLERS
    from werkzeug.test import run_wsgi_app

    own = {f"{name}:{port}" for name in (host, "localhost", "127.0.0.1")}

    class Body(io.BytesIO):
        """The answer's body as botocore reads a raw response: read() or stream()."""

        def stream(self, **_kwargs: Any) -> Iterator[bytes]:
            while chunk := self.read(64 * 1024):
                yield chunk

    def send_in_process(request: AWSPreparedRequest, **_kwargs: Any) -> AWSResponse | None:
        url = urlsplit(request.url)
        if url.netloc not in own:
            return None
        body = request.body or b""
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        raw_path = url.path + (f"?{url.query}" if url.query else "")
        environ: dict[str, Any] = {  # as werkzeug.serving's make_environ builds it
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(url.path).encode().decode("latin-1"),
            "QUERY_STRING": url.query,
            "REQUEST_URI": raw_path,
            "RAW_URI": raw_path,
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": 0,
            "SERVER_NAME": host,
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": url.netloc,
            "CONTENT_LENGTH": str(len(body)),
        }
        for name, value in request.headers.items():
            key = name.upper().replace("-", "_")
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = text
        answer, status, headers = run_wsgi_app(app, environ)
        try:
            content = b"".join(answer)
        finally:
            if hasattr(answer, "close"):
                answer.close()
        return AWSResponse(request.url, int(status.split()[0]), dict(headers), Body(content))

    # Sessions made from now on (boto3's default one is made on first use) get it.
    BUILTIN_HANDLERS.append(("before-send", send_in_process))
