"""The review page's HTTP server: one HTML page, its own JS and CSS, and a small JSON API.

Standard library only (`http.server`), bound to 127.0.0.1 by default: the page is for the
person running `python -m training_job review`, acting with their own AWS credentials.

    GET  /                      the page (static/index.html)
    GET  /static/<file>         its script and style (a fixed list, never a file path)
    GET  /api/next[?after=<image>&queued_at=<ts>]
                                the oldest pending photo (or the next after one, to skip):
                                {"item": {...} | null, "pending": n, "reviewer": name}
    GET  /api/image?image=s3://bucket/key
                                the photo's bytes, proxied from S3 (only a decision's photo)
    GET  /api/counts            {"pending": n}
    POST /api/answer            {"image", "answer", "revision"} -> {"item", "pending"}
    POST /api/undo              {"image", "revision"}           -> {"item", "pending"}

An item held for a second opinion (store.py) carries `"second_opinion": true`; its
`first_answer` and `first_reviewer` reach only the reviewer who gave them, so another
reviewer's answer stays their own (the first reviewer is not offered it by /api/next).

Refusals are JSON `{"error": message}` with a specific status: 400 bad JSON or fields
(JSON nested deeper than MAX_JSON_DEPTH, a revision over MAX_REVISION), 403 a foreign Host,
Origin or Sec-Fetch-Site (DNS rebinding, another site posting to the loopback or loading
a photo to learn which ids have decisions), 404,
409 a stale revision (with the fresh `item`), 411/413 a missing or oversized body, 415 a
POST that is not application/json (so no cross-site form can send one without CORS), 502
when AWS refused, 500 (logged) for a fault of this server. A refused request changes
nothing. A connection that sends nothing for REQUEST_TIMEOUT_SECONDS is closed, so stalled
clients cannot hold the server's threads.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from contract import shown
from contract.images import MAX_IMAGE_BYTES, content_type_of
from contract.manifest import ManifestError
from training_job.review.reviewed import ManifestBusy
from training_job.review.store import Conflict, EventNotSent, NotFound, ReviewStore

MAX_BODY_BYTES = 16 * 1024  # an answer is ~200 bytes of JSON
MAX_FIELD_CHARACTERS = 2048  # an s3:// id: bucket (63) + key (1024) + slack
# The page's revisions are JavaScript numbers, exact up to 2**53 - 1; DynamoDB's numbers
# hold 38 digits, and boto3 raised decimal.Rounded on more (the request was never answered).
MAX_REVISION = 2**53 - 1
MAX_JSON_DEPTH = 8  # the API's bodies are one flat object
REQUEST_TIMEOUT_SECONDS = 30.0  # a request line, headers or body not sent by then: closed
STATIC_DIR = Path(__file__).resolve().parent / "static"
# The only files served besides the API: name -> content type. Never joined onto a path
# taken from the request, so no `..` can reach another file.
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "review.js": "text/javascript; charset=utf-8",
    "review.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    # Everything the page uses is served here: no CDN, no inline script, no framing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    # Another site's <img> of /api/image would tell by its load or error event whether a
    # photo id has a decision: browsers refuse it any response of this server.
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Sec-Fetch-Site values of a request this server's own page (or the person typing its
# address) makes; browsers send `cross-site` or `same-site` for another page's requests.
OWN_FETCH_SITES = ("same-origin", "none")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

log = logging.getLogger(__name__)


class Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        store: ReviewStore,
        reviewer: str,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        if ":" in address[0]:  # ::1, the IPv6 loopback
            self.address_family = socket.AF_INET6
        super().__init__(address, ReviewHandler)
        self.store = store
        self.reviewer = reviewer
        self.request_timeout = request_timeout
        self.static = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_FILES}

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class ReviewHandler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # A read that waits longer ends the connection (http.server logs "Request timed
        # out") and frees its thread.
        self.connection.settimeout(self.server.request_timeout)

    def do_GET(self) -> None:
        self._respond(self._get)

    def do_POST(self) -> None:
        self._respond(self._post)

    # Routing

    def _get(self, path: str, query: dict[str, str]) -> tuple[str, bytes]:
        store = self.server.store
        if path in ("/", "/index.html"):
            return STATIC_FILES["index.html"], self.server.static["index.html"]
        if path.startswith("/static/"):
            name = path.removeprefix("/static/")
            if name not in STATIC_FILES:
                raise Refused(HTTPStatus.NOT_FOUND, f"no such file: {shown(name)}")
            return STATIC_FILES[name], self.server.static[name]
        if path == "/api/next":
            after = None
            if "after" in query or "queued_at" in query:
                after = (_required(query, "after"), _required(query, "queued_at"))
            reviewer = self.server.reviewer
            item = _as_seen_by(store.next_pending(after, reviewer), reviewer)
            return _json(item=item, pending=store.count_pending(), reviewer=reviewer)
        if path == "/api/counts":
            return _json(pending=store.count_pending())
        if path == "/api/image":
            data = store.image_bytes(_required(query, "image"), MAX_IMAGE_BYTES)
            content_type = content_type_of(data)
            if content_type is None:
                raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "the photo is not a PNG or JPEG")
            return content_type, data
        raise Refused(HTTPStatus.NOT_FOUND, f"no such page: {shown(path)}")

    def _post(self, path: str, query: dict[str, str]) -> tuple[str, bytes]:
        store = self.server.store
        if path not in ("/api/answer", "/api/undo"):
            raise Refused(HTTPStatus.NOT_FOUND, f"no such API: {shown(path)}")
        body = self._json_body()
        image = _field(body, "image", str)
        revision = _field(body, "revision", int)
        if isinstance(revision, bool) or not 0 <= revision <= MAX_REVISION:
            raise Refused(
                HTTPStatus.BAD_REQUEST, f"revision must be an integer from 0 to {MAX_REVISION}"
            )
        try:
            if path == "/api/answer":
                item = store.answer(
                    image, _field(body, "answer", str), revision, self.server.reviewer
                )
            else:
                item = store.undo(image, revision, self.server.reviewer)
        except Conflict as conflict:
            fresh = _as_seen_by(conflict.item, self.server.reviewer)
            raise Refused(HTTPStatus.CONFLICT, str(conflict), item=fresh) from conflict
        return _json(item=_as_seen_by(item, self.server.reviewer), pending=store.count_pending())

    # Plumbing

    def _respond(self, route: Any) -> None:
        split = urlsplit(self.path)
        status = HTTPStatus.OK
        try:
            self._check_origin()
            query = _query(split.query)
            content_type, payload = route(split.path, query)
        except Refused as refused:
            status = refused.status
            # A refused POST may have left its body unread: never parse it as a request.
            self.close_connection = self.close_connection or self.command == "POST"
            content_type, payload = _json(error=str(refused), **refused.extra)
        except NotFound as missing:
            status = HTTPStatus.NOT_FOUND
            content_type, payload = _json(error=str(missing))
        except ValueError as invalid:  # a bad photo id or answer (ManifestError is one too)
            status = HTTPStatus.BAD_REQUEST
            if isinstance(invalid, ManifestError):
                status = HTTPStatus.BAD_GATEWAY
            content_type, payload = _json(error=str(invalid))
        except (ClientError, BotoCoreError, EventNotSent, ManifestBusy) as error:
            log.warning("%s %s: %s", self.command, split.path, error)
            status = HTTPStatus.BAD_GATEWAY
            content_type, payload = _json(error=f"AWS refused a request: {error}")
        except (TimeoutError, ConnectionError):
            raise  # the client stalled or left: http.server closes the connection
        except Exception:  # a fault here: answered and logged, never a dropped connection
            log.exception("%s %s failed", self.command, split.path)
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            self.close_connection = True
            content_type, payload = _json(error="the review server failed; see its log")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _check_origin(self) -> None:
        """Only pages of this server may use it: another site's page (or a DNS name
        rebound to 127.0.0.1) sends a Host or Origin that is not ours."""
        port = self.server.server_address[1]
        bound = str(self.server.server_address[0])
        ours = {f"{name}:{port}" for name in (*LOOPBACK_NAMES, bound)}
        if self.headers.get("Host", "") not in ours:
            raise Refused(HTTPStatus.FORBIDDEN, "this server answers only its own address")
        origin = self.headers.get("Origin")
        if origin is not None and origin.removeprefix("http://") not in ours:
            raise Refused(HTTPStatus.FORBIDDEN, "requests from other sites are refused")
        # A GET from another page (an <img>, a no-cors fetch) carries no Origin; browsers
        # name where it comes from in Sec-Fetch-Site.
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site not in OWN_FETCH_SITES:
            raise Refused(HTTPStatus.FORBIDDEN, "requests from other sites are refused")

    def _json_body(self) -> dict[str, Any]:
        if self.headers.get_content_type() != "application/json":
            raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send Content-Type: application/json")
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self.close_connection = True
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is left unread
            raise Refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"a body of {length} bytes is over {MAX_BODY_BYTES}",
            )
        data = self.rfile.read(length)
        if _nesting(data) > MAX_JSON_DEPTH:
            # json.loads recurses per level: 7,000 levels raised RecursionError unanswered.
            raise Refused(
                HTTPStatus.BAD_REQUEST, f"the body is JSON nested over {MAX_JSON_DEPTH} deep"
            )
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise Refused(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {error}") from error
        if not isinstance(body, dict):
            raise Refused(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def _nesting(data: bytes) -> int:
    """An upper bound on how deep JSON `data` nests: its brackets counted outside strings
    (escaped quotes skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _as_seen_by(item: dict[str, Any] | None, reviewer: str) -> dict[str, Any] | None:
    """`item` as `reviewer`'s page gets it: a held answer is marked `second_opinion`, and
    its words and author are left out unless `reviewer` gave it."""
    if item is None or "first_answer" not in item:
        return item
    seen = {**item, "second_opinion": True}
    if item.get("first_reviewer") != reviewer:
        del seen["first_answer"]
        seen.pop("first_reviewer", None)
    return seen


def _json(**values: Any) -> tuple[str, bytes]:
    return "application/json", json.dumps(values).encode()


def _query(text: str) -> dict[str, str]:
    if len(text) > 4 * MAX_FIELD_CHARACTERS:
        raise Refused(HTTPStatus.REQUEST_URI_TOO_LONG, "the query is too long")
    values = parse_qs(text, keep_blank_values=True, max_num_fields=8)
    if any(len(items) > 1 for items in values.values()):
        raise Refused(HTTPStatus.BAD_REQUEST, "each query parameter at most once")
    return {name: items[0] for name, items in values.items()}


def _required(query: dict[str, str], name: str) -> str:
    value = query.get(name, "")
    if not value or len(value) > MAX_FIELD_CHARACTERS:
        raise Refused(HTTPStatus.BAD_REQUEST, f"the query needs {name}")
    return value


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or (isinstance(value, str) and not value):
        raise Refused(HTTPStatus.BAD_REQUEST, f"{name} must be a {kind.__name__}")
    if isinstance(value, str) and len(value) > MAX_FIELD_CHARACTERS:
        raise Refused(HTTPStatus.BAD_REQUEST, f"{name} is over {MAX_FIELD_CHARACTERS} characters")
    return value


@contextmanager
def serving(
    store: ReviewStore,
    reviewer: str,
    host: str = "127.0.0.1",
    port: int = 0,
    request_timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> Iterator[ReviewServer]:
    """The review server on (host, port), answering in a thread until the block ends."""
    server = ReviewServer((host, port), store, reviewer, request_timeout)
    thread = threading.Thread(target=server.serve_forever, name="review-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
