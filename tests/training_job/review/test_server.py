"""The review server's JSON API over real HTTP: what the page uses, and hostile input,
each refused with its own status and nothing changed (training_job/review/server.py)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import quote

import pytest

from contract.decisions import REVIEWED_MANIFEST_KEY
from tests.conftest import free_port
from tests.training_job.review.conftest import Photo, ReviewWorld, seed_item
from training_job.review.server import MAX_BODY_BYTES, ReviewServer, serving


def request(
    server: ReviewServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def post(server: ReviewServer, path: str, document: Any, **headers: str) -> tuple[int, Any]:
    status, _, payload = request(
        server,
        "POST",
        path,
        json.dumps(document).encode(),
        {"Content-Type": "application/json", **headers},
    )
    return status, json.loads(payload)


def test_the_page_and_its_own_files_are_served_with_a_strict_policy(
    review_server: ReviewServer,
) -> None:
    status, headers, page = request(review_server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b'src="/static/review.js"' in page and b"http" not in page  # nothing fetched elsewhere
    for name, kind in (("review.js", "text/javascript"), ("review.css", "text/css")):
        status, headers, _ = request(review_server, "GET", f"/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind)


@pytest.mark.parametrize(
    "path",
    [
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/..%2fserver.py",
        "/static//etc/passwd",
        "/static/review.js/../../store.py",
        "/../../../../etc/passwd",
        "/static/",
    ],
)
def test_no_path_reaches_another_file(review_server: ReviewServer, path: str) -> None:
    status, _, payload = request(review_server, "GET", path)
    assert status == 404
    assert "no such" in json.loads(payload)["error"]


def test_next_answer_and_undo_through_the_api(
    world: ReviewWorld, review_server: ReviewServer
) -> None:
    status, _, payload = request(review_server, "GET", "/api/next")
    first = json.loads(payload)
    assert status == 200
    assert first["reviewer"] == "alice" and first["pending"] == len(world.photos)
    item = first["item"]
    assert item["image"] == world.photos[0].image

    status, _, data = request(review_server, "GET", f"/api/image?image={quote(item['image'])}")
    assert status == 200 and data.startswith(b"\x89PNG")

    status, answered = post(
        review_server, "/api/answer", {"image": item["image"], "answer": "bicycle", "revision": 0}
    )
    assert status == 200 and answered["pending"] == len(world.photos) - 1
    assert answered["item"]["reviewer"] == "alice"

    status, undone = post(
        review_server,
        "/api/undo",
        {"image": item["image"], "revision": answered["item"]["revision"]},
    )
    assert status == 200 and undone["pending"] == len(world.photos)
    assert undone["item"]["review_pending"] == "pending"


def test_a_stale_answer_is_409_with_the_fresh_item(
    world: ReviewWorld, review_server: ReviewServer
) -> None:
    image = world.photos[0].image
    world.store().answer(image, "motorcycle", 0, "bob")
    status, refused = post(
        review_server, "/api/answer", {"image": image, "answer": "bicycle", "revision": 0}
    )
    assert status == 409
    assert "bob" in refused["error"]
    assert refused["item"] == world.item(image)
    assert refused["item"]["answer"] == "motorcycle"


HOSTILE_BODIES = [
    pytest.param(b"{not json", 400, "not JSON", id="bad-json"),
    pytest.param(b"\xff\xfe", 400, "not JSON", id="not-utf8"),
    pytest.param(b"[1, 2]", 400, "JSON object", id="not-an-object"),
    pytest.param(b"", 400, "not JSON", id="empty"),
    pytest.param(b'{"answer": "bicycle", "revision": 0}', 400, "image", id="no-image"),
    pytest.param(
        b'{"image": "IMAGE", "answer": "car", "revision": 0}',
        400,
        "unknown answer",
        id="unknown-answer",
    ),
    pytest.param(b'{"image": "IMAGE", "answer": 1, "revision": 0}', 400, "answer", id="answer-int"),
    pytest.param(b'{"image": "IMAGE", "answer": "bicycle"}', 400, "revision", id="no-revision"),
    pytest.param(
        b'{"image": "IMAGE", "answer": "bicycle", "revision": true}',
        400,
        "revision",
        id="revision-bool",
    ),
    pytest.param(
        b'{"image": "IMAGE", "answer": "bicycle", "revision": -1}',
        400,
        "revision",
        id="revision-negative",
    ),
    pytest.param(
        b'{"image": "IMAGE", "answer": "bicycle", "revision": 0.5}',
        400,
        "revision",
        id="revision-float",
    ),
    pytest.param(
        b'{"image": "s3://BUCKET/test/none.png", "answer": "bicycle", "revision": 0}',
        404,
        "no decision",
        id="unknown-photo",
    ),
    pytest.param(
        b'{"image": "s3://other/test/x.png", "answer": "bicycle", "revision": 0}',
        404,
        "not in the bucket",
        id="other-bucket",
    ),
    pytest.param(
        b'{"image": "../../etc/passwd", "answer": "bicycle", "revision": 0}',
        400,
        "s3://",
        id="not-s3",
    ),
    pytest.param(
        b'{"image": "s3://BUCKET/' + b"k" * 3000 + b'", "answer": "bicycle", "revision": 0}',
        400,
        "over",
        id="long-image",
    ),
    # Issue 24 item 10: each was answered nothing at all (decimal.Rounded in boto3's
    # DynamoDB number conversion; RecursionError in json.loads).
    pytest.param(
        b'{"image": "IMAGE", "answer": "bicycle", "revision": 1' + b"0" * 40 + b"}",
        400,
        "revision must be an integer from 0 to 9007199254740991",
        id="revision-10**40",
    ),
    pytest.param(
        b'{"image": "IMAGE", "answer": "bicycle", "revision": ' + b"[" * 7000 + b"]" * 7000 + b"}",
        400,
        "nested over 8 deep",
        id="nested-7000-deep",
    ),
]


@pytest.mark.parametrize(("body", "expected", "message"), HOSTILE_BODIES)
def test_hostile_answers_are_refused_and_change_nothing(
    world: ReviewWorld, review_server: ReviewServer, body: bytes, expected: int, message: str
) -> None:
    body = body.replace(b"IMAGE", world.photos[0].image.encode())
    body = body.replace(b"BUCKET", world.bucket.encode())
    before = world.item(world.photos[0].image)
    status, _, payload = request(
        review_server, "POST", "/api/answer", body, {"Content-Type": "application/json"}
    )
    assert status == expected
    assert message in json.loads(payload)["error"]
    assert world.item(world.photos[0].image) == before
    assert world.events() == []
    listed = world.s3.list_objects_v2(Bucket=world.bucket, Prefix=REVIEWED_MANIFEST_KEY)
    assert listed["KeyCount"] == 0


def test_requests_the_page_never_sends_are_refused(
    world: ReviewWorld, review_server: ReviewServer
) -> None:
    image = world.photos[0].image
    answer = json.dumps({"image": image, "answer": "bicycle", "revision": 0}).encode()
    host, port = review_server.server_address[:2]
    cases = [
        # An oversized body is refused from its Content-Length, before it is read.
        (
            "/api/answer",
            b"{" + b" " * MAX_BODY_BYTES + b"}",
            {"Content-Type": "application/json"},
            413,
        ),
        # A cross-site form can post text/plain without a CORS preflight; JSON cannot.
        ("/api/answer", answer, {"Content-Type": "text/plain"}, 415),
        ("/api/answer", answer, {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        # Another site's page, or a DNS name rebound to 127.0.0.1.
        (
            "/api/answer",
            answer,
            {"Content-Type": "application/json", "Origin": "http://evil.example"},
            403,
        ),
        (
            "/api/answer",
            answer,
            {"Content-Type": "application/json", "Host": f"evil.example:{port}"},
            403,
        ),
        ("/api/delete", answer, {"Content-Type": "application/json"}, 404),
    ]
    for path, body, headers, expected in cases:
        status, _, payload = request(review_server, "POST", path, body, headers)
        assert (status, headers) == (expected, headers)
        assert json.loads(payload)["error"]
    # No Content-Length at all (a chunked body).
    connection = http.client.HTTPConnection(str(host), port, timeout=30)
    connection.putrequest("POST", "/api/answer")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    connection.send(b"5\r\n{}{}{\r\n0\r\n\r\n")
    assert connection.getresponse().status == 411
    connection.close()
    assert world.item(image)["review_pending"] == "pending"
    assert world.events() == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", 400),  # no image
        ("?image=s3://BUCKET/test/none.png", 404),  # not a decision's photo
        ("?image=s3://BUCKET/test/../../etc/passwd", 404),
        ("?image=/etc/passwd", 404),
        ("?image=s3://other-bucket/x.png", 404),
        ("?image=a&image=b", 400),
    ],
)
def test_only_a_decisions_photo_is_proxied(
    world: ReviewWorld, review_server: ReviewServer, query: str, expected: int
) -> None:
    status, _, payload = request(
        review_server, "GET", "/api/image" + query.replace("BUCKET", world.bucket)
    )
    assert status == expected, payload
    assert json.loads(payload)["error"]


def test_a_photo_that_is_not_an_image_is_not_served_as_one(
    world: ReviewWorld, review_server: ReviewServer
) -> None:
    key = "incoming/page.html"
    world.s3.put_object(Bucket=world.bucket, Key=key, Body=b"<script>alert(1)</script>")
    photo = Photo(f"s3://{world.bucket}/{key}", key, "neither", (0, 0))
    seed_item(world, photo, "2026-11-29T11:00:00.000Z")
    status, headers, _ = request(review_server, "GET", f"/api/image?image={quote(photo.image)}")
    assert status == 415 and headers["Content-Type"] == "application/json"


def test_a_skip_needs_both_parts_of_the_position(review_server: ReviewServer) -> None:
    status, _, payload = request(review_server, "GET", "/api/next?after=s3://x/y")
    assert status == 400 and "queued_at" in json.loads(payload)["error"]


def test_a_refused_body_is_never_read_as_the_next_request(
    world: ReviewWorld, review_server: ReviewServer
) -> None:
    """A body left unread (refused by its type) must not be parsed as a request: the
    server closes the connection rather than reading on."""
    host, port = review_server.server_address[:2]
    smuggled = b"GET /api/counts HTTP/1.1\r\nHost: x\r\n\r\n"
    connection = http.client.HTTPConnection(str(host), port, timeout=30)
    connection.request("POST", "/api/answer", body=smuggled, headers={"Content-Type": "text/plain"})
    response = connection.getresponse()
    assert response.status == 415
    assert response.getheader("Connection") == "close"
    response.read()
    connection.close()


def test_a_stalled_connection_is_closed_and_frees_its_thread(world: ReviewWorld) -> None:
    """Issue 24 item 10: 300 POSTs that never finished held 302 threads; a connection
    that sends nothing for the request timeout is closed."""
    with serving(world.store(), "alice", port=free_port(), request_timeout=0.5) as server:
        host, port = server.server_address[:2]
        with socket.create_connection((str(host), port), timeout=30) as stalled:
            stalled.sendall(b"POST /api/answer HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no end
            assert stalled.recv(1024) == b""  # closed by the server, not by our timeout
        status, _, payload = request(server, "GET", "/api/counts")
        assert status == 200 and "pending" in json.loads(payload)


def test_another_sites_photo_request_is_refused(
    world: ReviewWorld, review_server: ReviewServer
) -> None:
    """Another site's <img> of a photo carries no Origin but Sec-Fetch-Site: cross-site;
    its load or error event told that site which photo ids have decisions."""
    path = f"/api/image?image={quote(world.photos[0].image)}"
    for site in ("cross-site", "same-site"):
        status, headers, payload = request(
            review_server, "GET", path, None, {"Sec-Fetch-Site": site}
        )
        assert status == 403, site
        assert "other sites" in json.loads(payload)["error"]
    for site in ("same-origin", "none"):
        status, headers, _ = request(review_server, "GET", path, None, {"Sec-Fetch-Site": site})
        assert status == 200, site
        assert headers["Cross-Origin-Resource-Policy"] == "same-origin"


def test_a_held_answer_reaches_only_its_reviewer(world: ReviewWorld) -> None:
    """A photo held for a second opinion is marked `second_opinion` for every reviewer;
    the held answer and who gave it reach only that reviewer, so the second is not told
    what to answer (docs/review.md, "A second opinion")."""
    image = world.photos[0].image
    seed_item(world, world.photos[0], "2026-11-29T09:00:00.000Z", confidence=0.95)
    with (
        serving(world.store(), "alice", port=free_port()) as alice,
        serving(world.store(), "bob", port=free_port()) as bob,
    ):
        status, held = post(
            alice, "/api/answer", {"image": image, "answer": "motorcycle", "revision": 0}
        )
        assert status == 200
        assert held["item"]["second_opinion"] is True
        assert (held["item"]["first_answer"], held["item"]["first_reviewer"]) == (
            "motorcycle",
            "alice",
        )

        _, _, payload = request(bob, "GET", "/api/next")
        offered = json.loads(payload)["item"]
        assert offered["image"] == image and offered["second_opinion"] is True
        assert "first_answer" not in offered and "first_reviewer" not in offered
        _, _, payload = request(alice, "GET", "/api/next")
        assert json.loads(payload)["item"]["image"] == world.photos[1].image  # not hers

        status, stale = post(
            bob, "/api/answer", {"image": image, "answer": "bicycle", "revision": 0}
        )
        assert status == 409 and stale["item"]["second_opinion"] is True
        assert "first_answer" not in stale["item"] and "motorcycle" not in stale["error"]

        status, decided = post(
            bob,
            "/api/answer",
            {"image": image, "answer": "bicycle", "revision": offered["revision"]},
        )
        assert status == 200 and "first_answer" not in decided["item"]
    assert world.item(image)["first_answer"] == "motorcycle"  # the table keeps it
