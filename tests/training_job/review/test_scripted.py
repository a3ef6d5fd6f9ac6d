"""The demo's scripted reviewer answers through the page's own HTTP API."""

from __future__ import annotations

from contract.decisions import REVIEWED_MANIFEST_KEY, photo_location
from contract.manifest import parse_lst
from tests.training_job.review.conftest import ReviewWorld
from training_job.review.reviewed import reviewed_filename
from training_job.review.scripted import review_queue
from training_job.review.server import ReviewServer


def test_the_scripted_reviewer_answers_what_it_knows_and_skips_the_rest(
    world: ReviewWorld, review_server: ReviewServer
) -> None:
    unknown = world.photos[2]  # in the middle of the queue: skipped, the rest still answered
    truth = {photo.image: photo.truth for photo in world.photos if photo is not unknown}
    truth[world.photos[3].image] = "neither"

    # A test set's labels are by key; the queue's ids name the upload (key and ETag).
    result = review_queue(
        review_server.url, {photo_location(image): answer for image, answer in truth.items()}
    )

    assert result.pending_before == len(world.photos)
    assert result.pending_after == 1
    assert result.unknown == 1 and result.conflicts == 0
    assert sum(result.answers.values()) == len(world.photos) - 1
    assert result.answers["neither"] == 1
    for photo in world.photos:
        item = world.item(photo.image)
        if photo is unknown:
            assert item["review_pending"] == "pending"
        else:
            assert (item["answer"], item["reviewer"]) == (truth[photo.image], "alice")
    body = world.s3.get_object(Bucket=world.bucket, Key=REVIEWED_MANIFEST_KEY)["Body"].read()
    labelled = {entry.filename: entry.label for entry in parse_lst(body.decode())}
    assert labelled == {
        reviewed_filename(image): ("bicycle", "motorcycle").index(answer)
        for image, answer in truth.items()
        if answer != "neither"
    }
    assert len(world.events()) == len(world.photos) - 1


def test_an_empty_queue_is_nothing_to_do(world: ReviewWorld, review_server: ReviewServer) -> None:
    store = world.store()
    for photo in world.photos:
        store.answer(photo.image, photo.truth, 0, "bob")
    result = review_queue(
        review_server.url, {photo_location(p.image): p.truth for p in world.photos}
    )
    assert (result.pending_before, result.pending_after, sum(result.answers.values())) == (0, 0, 0)
