"""The review page in a real headless Chromium (tests/browser.py), against the real server
and the local AWS: keyboard answers, undo, the photo's size and rendering, the counter,
and two reviewers on one queue."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import start_chromium
from tests.conftest import free_port
from tests.training_job.review.conftest import PHONE_SIZE, ReviewWorld
from training_job.review.server import ReviewServer, serving

WAIT_SECONDS = 30


def shown_photo(browser: Any) -> str | None:
    """The s3:// id of the photo drawn on the page, once its bytes have loaded."""
    return browser.execute_script(
        "const p = document.getElementById('photo');"
        "return p.hidden || p.dataset.loaded !== p.dataset.image || !p.complete"
        " ? null : p.dataset.loaded;"
    )


def wait_for_photo(browser: Any, image: str) -> None:
    WebDriverWait(browser, WAIT_SECONDS).until(lambda b: shown_photo(b) == image)


def wait_idle(browser: Any) -> None:
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda b: b.execute_script("return !document.body.hasAttribute('aria-busy')")
    )


def press(browser: Any, keys: str) -> None:
    for key in keys:
        browser.find_element(By.TAG_NAME, "body").send_keys(key)
        wait_idle(browser)


def left(browser: Any) -> str:
    return browser.find_element(By.ID, "left").text


def test_a_photo_is_labelled_with_the_keyboard(
    world: ReviewWorld, review_server: ReviewServer, browser: Any
) -> None:
    first, second = world.photos[0], world.photos[1]
    browser.get(review_server.url)
    wait_for_photo(browser, first.image)
    assert left(browser) == f"{len(world.photos)} left"
    assert (
        "The model says bicycle, 62% sure (doubtful)" in browser.find_element(By.ID, "guess").text
    )

    press(browser, "m")
    wait_for_photo(browser, second.image)
    assert left(browser) == f"{len(world.photos) - 1} left"
    item = world.item(first.image)
    assert (item["answer"], item["reviewer"], item["source"]) == ("motorcycle", "alice", "person")
    [event] = world.events()
    assert event["detail"]["source"] == "person"


def test_undo_brings_the_last_answered_photo_back(
    world: ReviewWorld, review_server: ReviewServer, browser: Any
) -> None:
    first, second = world.photos[0], world.photos[1]
    browser.get(review_server.url)
    wait_for_photo(browser, first.image)
    press(browser, "b")
    wait_for_photo(browser, second.image)
    press(browser, "n")
    wait_for_photo(browser, world.photos[2].image)
    assert left(browser) == f"{len(world.photos) - 2} left"

    press(browser, "u")  # the last answer first
    wait_for_photo(browser, second.image)
    assert left(browser) == f"{len(world.photos) - 1} left"
    assert "answer" not in world.item(second.image)
    assert world.item(first.image)["answer"] == "bicycle"

    browser.find_element(By.ID, "undo").click()  # the button does the same
    wait_idle(browser)
    wait_for_photo(browser, first.image)
    assert left(browser) == f"{len(world.photos)} left"
    assert browser.find_element(By.ID, "undo").get_attribute("disabled") is not None
    assert all("answer" not in world.item(photo.image) for photo in world.photos)


def drawn(browser: Any) -> dict[str, Any]:
    """The photo element's box, its natural size, its rendering, and the window's size."""
    return browser.execute_script(
        "const p = document.getElementById('photo'); const r = p.getBoundingClientRect();"
        "return {left: r.left, top: r.top, right: r.right, bottom: r.bottom,"
        " width: r.width, height: r.height, naturalWidth: p.naturalWidth,"
        " naturalHeight: p.naturalHeight, fit: getComputedStyle(p).objectFit,"
        " rendering: getComputedStyle(p).imageRendering,"
        " windowWidth: window.innerWidth, windowHeight: window.innerHeight};"
    )


def test_a_cifar_photo_is_drawn_large_with_visible_pixels(
    world: ReviewWorld, review_server: ReviewServer, browser: Any
) -> None:
    browser.get(review_server.url)
    wait_for_photo(browser, world.photos[0].image)
    box = drawn(browser)
    assert (box["naturalWidth"], box["naturalHeight"]) == (32, 32)
    assert box["rendering"] == "pixelated"
    assert box["fit"] == "contain"
    # object-fit: contain draws the square image at the box's smaller side.
    assert min(box["width"], box["height"]) >= 400


def test_a_phone_photo_fits_the_window(
    world: ReviewWorld, review_server: ReviewServer, browser: Any
) -> None:
    phone = world.photos[-1]
    assert phone.size == PHONE_SIZE
    browser.get(review_server.url)
    wait_for_photo(browser, world.photos[0].image)
    press(browser, "s" * (len(world.photos) - 1))  # skip to the last photo queued
    wait_for_photo(browser, phone.image)
    box = drawn(browser)
    assert (box["naturalWidth"], box["naturalHeight"]) == PHONE_SIZE
    assert box["rendering"] != "pixelated"  # scaled down smoothly
    assert box["fit"] == "contain"  # the whole photo is drawn inside the box, uncropped
    assert box["left"] >= 0 and box["right"] <= box["windowWidth"]
    assert box["top"] >= 0 and box["bottom"] <= box["windowHeight"]
    assert box["width"] >= 600  # fitted, not shown as a thumbnail
    assert all("answer" not in world.item(photo.image) for photo in world.photos)  # skips
    press(browser, "s")  # and round to the oldest again
    wait_for_photo(browser, world.photos[0].image)


@pytest.mark.timeout(300)
def test_two_reviewers_on_one_queue_never_overwrite_each_other(world: ReviewWorld) -> None:
    with (
        serving(world.store(), "alice", port=free_port()) as alice_server,
        serving(world.store(), "bob", port=free_port()) as bob_server,
    ):
        alice, bob = start_chromium(), start_chromium()
        try:
            first, second, third = (photo.image for photo in world.photos[:3])
            alice.get(alice_server.url)
            bob.get(bob_server.url)
            wait_for_photo(alice, first)
            wait_for_photo(bob, first)  # both see the oldest photo

            press(alice, "b")
            wait_for_photo(alice, second)
            press(bob, "m")  # too late: alice answered it
            wait_for_photo(bob, second)  # bob is moved on
            assert "alice" in bob.find_element(By.ID, "message").text
            assert bob.find_element(By.ID, "undo").get_attribute("disabled") is not None

            press(bob, "m")
            wait_for_photo(bob, third)
            press(alice, "n")  # alice still showed the second photo: bob answered it
            wait_for_photo(alice, third)
            assert "bob" in alice.find_element(By.ID, "message").text

            press(alice, "u")  # undoes alice's own answer to the first photo
            wait_for_photo(alice, first)
            assert left(alice) == f"{len(world.photos) - 1} left"
            press(bob, "u")  # bob's own answer, the second photo
            wait_for_photo(bob, second)
        finally:
            alice.quit()
            bob.quit()
    assert all("answer" not in world.item(photo.image) for photo in world.photos)
    # Two answers, then their undos: each undo is the person's withdrawal, never a model
    # event a routing system would act on (docs/events.md, "A person's events").
    events = [e["detail"] for e in world.events()]
    assert [e["source"] for e in events] == ["person"] * 4
    assert [e["status"] for e in events][2:] == ["withdrawn", "withdrawn"]


def test_every_button_is_on_screen_at_a_phones_width(
    world: ReviewWorld, review_server: ReviewServer, browser: Any
) -> None:
    """Issue 24 item 10: at 420 px the row of buttons was wider than the page and centred,
    so the Bicycle button sat off the left edge, out of reach."""
    browser.set_window_size(420, 900)
    browser.get(review_server.url)
    wait_for_photo(browser, world.photos[0].image)
    width = browser.execute_script("return document.documentElement.clientWidth")
    assert width <= 420
    for button in browser.find_elements(By.CSS_SELECTOR, "#buttons button"):
        left_edge, right_edge = browser.execute_script(
            "const r = arguments[0].getBoundingClientRect(); return [r.left, r.right];", button
        )
        assert left_edge >= 0 and right_edge <= width, (button.text, left_edge, right_edge)


def test_an_unfamiliar_photo_says_why_and_a_neither_answer_is_kept(
    world: ReviewWorld, review_server: ReviewServer, browser: Any
) -> None:
    """Issue 23: the page shows the reason `unfamiliar` in words (the model's confidence
    means little there), and the person's "neither" is kept on the item."""
    from contract.decisions import ANSWER_NEITHER, REASON_UNFAMILIAR
    from tests.training_job.review.conftest import seed_item

    first = world.photos[0]
    seed_item(world, first, "2026-11-29T09:00:00.000Z", REASON_UNFAMILIAR, "motorcycle", 0.99)
    browser.get(review_server.url)
    wait_for_photo(browser, first.image)
    guess = browser.find_element(By.ID, "guess").text
    assert "Unfamiliar: the model has not seen photos like this one" in guess
    assert "motorcycle, 99% sure" in guess
    press(browser, "n")
    item = world.item(first.image)
    assert (item["answer"], item["review_reason"]) == (ANSWER_NEITHER, REASON_UNFAMILIAR)


@pytest.mark.timeout(300)
def test_a_held_answer_waits_for_a_second_reviewer_who_is_not_told_it(
    world: ReviewWorld, browser: Any
) -> None:
    """Alice contradicts a model 95% sure: her page says the answer is held and moves on,
    and never offers the photo again; Bob's page offers it as a second opinion without
    Alice's answer or the model's guess (which, with two classes, would give hers away),
    and his answer decides it (docs/review.md, "A second opinion")."""
    from tests.training_job.review.conftest import seed_item

    first, second = world.photos[0], world.photos[1]
    seed_item(world, first, "2026-11-29T09:00:00.000Z", confidence=0.95)
    with (
        serving(world.store(), "alice", port=free_port()) as alice_server,
        serving(world.store(), "bob", port=free_port()) as bob_server,
    ):
        browser.get(alice_server.url)
        wait_for_photo(browser, first.image)
        press(browser, "m")
        wait_for_photo(browser, second.image)
        message = browser.find_element(By.ID, "message").text
        assert "held" in message and "another reviewer" in message
        assert browser.find_element(By.ID, "undo").get_attribute("disabled") is not None
        browser.refresh()  # a fresh page: the held photo is not hers to answer
        wait_for_photo(browser, second.image)

        browser.get(bob_server.url)
        wait_for_photo(browser, first.image)
        guess = browser.find_element(By.ID, "guess").text
        assert "Second opinion" in guess
        assert not any(word in guess for word in ("motorcycle", "bicycle", "alice", "95%"))
        press(browser, "b")
        wait_for_photo(browser, second.image)
        assert "bicycle: saved" in browser.find_element(By.ID, "message").text
    item = world.item(first.image)
    assert (item["label"], item["reviewer"], item["first_reviewer"]) == ("bicycle", "bob", "alice")
