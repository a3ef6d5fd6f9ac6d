"""The review store against the local AWS: the queue's order, conditional answers and
undos, the decision event, and the answers' manifest in S3 (training_job/review/store.py,
reviewed.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from contract.decisions import (
    EVENT_DETAIL_TYPE,
    EVENT_STATUS_WITHDRAWN,
    REASON_AUDIT,
    REVIEWED_IMAGES_PREFIX,
    REVIEWED_MANIFEST_KEY,
    SOURCE_MODEL,
    SOURCE_PERSON,
    STATUS_NEEDS_REVIEW,
    STATUS_REVIEWED,
    STATUS_ROUTED,
)
from contract.manifest import LstEntry, parse_lst
from tests.training_job.review.conftest import ReviewWorld, seed_item
from training_job.review.reviewed import reviewed_filename
from training_job.review.store import Conflict, NotFound


def manifest(world: ReviewWorld) -> list[LstEntry]:
    body = world.s3.get_object(Bucket=world.bucket, Key=REVIEWED_MANIFEST_KEY)["Body"]
    return parse_lst(body.read().decode())


def test_the_queue_is_served_oldest_first_and_skipping_wraps_round(world: ReviewWorld) -> None:
    store = world.store()
    images = [photo.image for photo in world.photos]
    assert store.count_pending() == len(images)
    seen = [store.next_pending()]
    while len(seen) < len(images) + 1:
        last = seen[-1]
        assert last is not None
        seen.append(store.next_pending((last["image"], last["queued_at"])))
    assert [item["image"] for item in seen if item] == [*images, images[0]]


def test_an_answer_records_the_person_emits_the_event_and_keeps_the_training_line(
    world: ReviewWorld,
) -> None:
    store = world.store()
    photo = world.photos[0]
    answered = store.answer(photo.image, "motorcycle", 0, "alice")

    assert answered == world.item(photo.image)
    assert answered["status"] == STATUS_REVIEWED
    assert answered["answer"] == answered["label"] == "motorcycle"
    assert answered["source"] == SOURCE_PERSON
    assert answered["reviewer"] == "alice"
    assert answered["reviewed_at"].endswith("Z")
    assert answered["revision"] == 1
    assert "review_pending" not in answered
    assert answered["queued_at"] == "2026-11-29T10:00:00.000Z"  # kept, for an undo
    assert store.count_pending() == len(world.photos) - 1
    assert store.next_pending()["image"] == world.photos[1].image  # type: ignore[index]

    [event] = world.events()
    assert event["detail-type"] == EVENT_DETAIL_TYPE
    assert event["detail"]["source"] == SOURCE_PERSON
    assert event["detail"]["label"] == "motorcycle"
    assert event["detail"]["status"] == STATUS_REVIEWED
    assert event["detail"]["model_version"] == "3"
    assert event["detail"]["variant"] == "v3"  # person events carry it as documented

    filename = reviewed_filename(photo.image)
    assert manifest(world) == [LstEntry(0, 1, filename)]
    copied = world.s3.get_object(Bucket=world.bucket, Key=REVIEWED_IMAGES_PREFIX + filename)
    original = world.s3.get_object(Bucket=world.bucket, Key=photo.key)
    assert copied["Body"].read() == original["Body"].read()


def test_a_photo_uploaded_over_since_is_neither_shown_nor_learned_from(
    world: ReviewWorld,
) -> None:
    """A reviewer's answer is about the upload the model decided (issue 21, item 6): the
    id carries its ETag, and the store reads and copies the key only while it holds that
    upload (S3 API reference: GetObject If-Match, CopyObject x-amz-copy-source-if-match
    answer 412 PreconditionFailed otherwise)."""
    store = world.store()
    photo = world.photos[0]
    assert (
        store.image_bytes(photo.image, 10_000_000)
        == world.s3.get_object(Bucket=world.bucket, Key=photo.key)["Body"].read()
    )
    world.s3.put_object(Bucket=world.bucket, Key=photo.key, Body=b"a later upload")
    with pytest.raises(NotFound, match="holds a later upload now"):
        store.image_bytes(photo.image, 10_000_000)
    with pytest.raises(ClientError) as refused:
        store.answer(photo.image, "motorcycle", 0, "alice")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError):  # no training line, no copy of the later upload
        world.s3.get_object(Bucket=world.bucket, Key=REVIEWED_MANIFEST_KEY)


def test_neither_writes_no_training_line_and_no_image(world: ReviewWorld) -> None:
    store = world.store()
    store.answer(world.photos[0].image, "bicycle", 0, "alice")
    store.answer(world.photos[1].image, "neither", 0, "alice")
    assert [entry.filename for entry in manifest(world)] == [
        reviewed_filename(world.photos[0].image)
    ]
    listed = world.s3.list_objects_v2(Bucket=world.bucket, Prefix=REVIEWED_IMAGES_PREFIX)
    assert [o["Key"] for o in listed["Contents"]] == [
        REVIEWED_IMAGES_PREFIX + reviewed_filename(world.photos[0].image)
    ]
    assert world.item(world.photos[1].image)["label"] == "neither"


def test_a_stale_revision_is_a_conflict_with_the_fresh_item_and_changes_nothing(
    world: ReviewWorld,
) -> None:
    store = world.store()
    image = world.photos[0].image
    store.answer(image, "bicycle", 0, "alice")
    before = world.item(image)
    with pytest.raises(Conflict, match="alice") as refused:
        store.answer(image, "motorcycle", 0, "bob")
    assert refused.value.item == before == world.item(image)
    with pytest.raises(Conflict):  # the fresh revision, but the photo left the queue
        store.answer(image, "motorcycle", before["revision"], "bob")
    assert world.item(image) == before
    assert len(manifest(world)) == 1


def test_of_reviewers_answering_one_photo_at_once_exactly_one_wins(world: ReviewWorld) -> None:
    store = world.store()
    image = world.photos[0].image
    start = threading.Barrier(8)

    def answer(reviewer: str) -> str:
        start.wait()
        try:
            store.answer(image, "bicycle" if reviewer < "r4" else "motorcycle", 0, reviewer)
        except Conflict:
            return "conflict"
        return "won"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(answer, [f"r{n}" for n in range(8)]))
    assert sorted(outcomes) == ["conflict"] * 7 + ["won"]
    item = world.item(image)
    assert item["revision"] == 1
    assert manifest(world) == [
        LstEntry(0, ("bicycle", "motorcycle").index(item["answer"]), reviewed_filename(image))
    ]


def test_reviewers_answering_different_photos_at_once_lose_no_manifest_line(
    world: ReviewWorld,
) -> None:
    store = world.store()
    start = threading.Barrier(len(world.photos))

    def answer(number: int) -> None:
        start.wait()
        photo = world.photos[number]
        store.answer(photo.image, photo.truth, 0, f"reviewer{number}")

    with ThreadPoolExecutor(len(world.photos)) as pool:
        list(pool.map(answer, range(len(world.photos))))
    entries = manifest(world)
    assert sorted(entry.filename for entry in entries) == sorted(
        reviewed_filename(photo.image) for photo in world.photos
    )
    assert [entry.row for entry in entries] == list(range(len(world.photos)))
    assert store.count_pending() == 0


def test_undo_puts_the_models_decision_and_the_queue_back(world: ReviewWorld) -> None:
    store = world.store()
    photo = world.photos[2]
    seeded = world.item(photo.image)
    answered = store.answer(photo.image, "motorcycle", 0, "alice")
    world.events()  # the answer's event

    restored = store.undo(photo.image, answered["revision"], "alice")
    assert restored == world.item(photo.image)
    assert restored == {**seeded, "revision": 2}
    assert restored["status"] == STATUS_NEEDS_REVIEW and restored["source"] == SOURCE_MODEL
    assert store.count_pending() == len(world.photos)
    assert manifest(world) == []


def test_undo_emits_only_the_persons_withdrawal_never_a_model_event(world: ReviewWorld) -> None:
    """A routing system subscribes to `detail.source: model` (docs/events.md): an undo of
    a doubtful photo's answer must not tell it the model decided `needs_review`; it hears
    that the person's answer (the label it was told) is withdrawn."""
    store = world.store()
    photo = world.photos[2]
    answered = store.answer(photo.image, "motorcycle", 0, "alice")
    world.events()  # the answer's event

    store.undo(photo.image, answered["revision"], "alice")
    [event] = world.events()
    assert event["detail-type"] == EVENT_DETAIL_TYPE
    assert event["detail"]["source"] == SOURCE_PERSON
    assert event["detail"]["status"] == EVENT_STATUS_WITHDRAWN
    assert event["detail"]["label"] == "motorcycle"  # the answer taken back
    assert event["detail"]["variant"] == "v3"


def test_undo_of_an_audit_photo_routes_it_again_without_a_second_routed_event(
    world: ReviewWorld,
) -> None:
    """The model's `routed` event for an audit photo was sent when it decided; the undo
    restores that decision in the table and emits the withdrawal, not `routed` again.
    (Alice contradicts a model 97% sure: her answer waits for Bob's, which decides.)"""
    photo = world.photos[0]
    seed_item(world, photo, "2026-11-29T09:00:00.000Z", REASON_AUDIT, "motorcycle", 0.97)
    store = world.store()
    held = store.answer(photo.image, "bicycle", 0, "alice")
    answered = store.answer(photo.image, "bicycle", held["revision"], "bob")
    restored = store.undo(photo.image, answered["revision"], "bob")
    assert restored["status"] == STATUS_ROUTED
    assert restored["label"] == "motorcycle"
    answer_event, undo_event = world.events()
    assert answer_event["detail"]["status"] == STATUS_REVIEWED
    assert (undo_event["detail"]["source"], undo_event["detail"]["status"]) == (
        SOURCE_PERSON,
        EVENT_STATUS_WITHDRAWN,
    )
    assert undo_event["detail"]["label"] == "bicycle"


def test_only_the_reviewer_who_answered_may_undo_and_only_what_they_saw(
    world: ReviewWorld,
) -> None:
    store = world.store()
    image = world.photos[0].image
    answered = store.answer(image, "bicycle", 0, "alice")
    with pytest.raises(Conflict):
        store.undo(image, answered["revision"], "bob")
    with pytest.raises(Conflict):
        store.undo(image, answered["revision"] - 1, "alice")
    pending = world.photos[1].image
    with pytest.raises(Conflict):  # never answered: nothing to undo
        store.undo(pending, 0, "alice")
    assert world.item(image) == answered
    assert len(manifest(world)) == 1


def test_unknown_answers_photos_and_buckets_are_refused(world: ReviewWorld) -> None:
    store = world.store()
    image = world.photos[0].image
    with pytest.raises(ValueError, match="unknown answer"):
        store.answer(image, "car", 0, "alice")
    with pytest.raises(NotFound):
        store.answer(f"s3://{world.bucket}/test/missing.png", "bicycle", 0, "alice")
    with pytest.raises(NotFound):
        store.answer("s3://another-bucket/test/x.png", "bicycle", 0, "alice")
    with pytest.raises(ValueError, match="s3://"):
        store.answer("/etc/passwd", "bicycle", 0, "alice")
    assert world.item(image)["review_pending"] == "pending"
    assert world.events() == []
