// The review page: one photo at a time from /api/next, answered with the buttons or the
// keys B, M, N (answer), S (skip), U (undo). Every answer carries the revision the page
// saw; a 409 means another reviewer got there first, and the page moves on. An answer held
// for a second opinion is said so, and a photo waiting for one hides the first answer.
"use strict";

const SMALL_PIXELS = 256; // an image this small or smaller is drawn with visible pixels
const KEYS = { b: "bicycle", m: "motorcycle", n: "neither" };

const state = {
  item: null, // the photo on screen, as the table holds it
  answered: [], // {image, revision} of this page's answers, the last on top (undo)
  busy: false, // a request is in flight: keys wait
};

const $ = (id) => document.getElementById(id);

async function call(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json();
  return { status: response.status, data };
}

function say(text) {
  $("message").textContent = text;
}

function showCount(pending) {
  $("left").textContent = `${pending} left`;
  $("left").dataset.pending = String(pending);
}

function show(item) {
  state.item = item;
  const photo = $("photo");
  $("empty").hidden = item !== null;
  photo.hidden = item === null;
  if (item === null) {
    photo.removeAttribute("src");
    delete photo.dataset.image;
    $("guess").textContent = "";
    return;
  }
  photo.classList.remove("small");
  photo.dataset.image = item.image;
  photo.src = `/api/image?image=${encodeURIComponent(item.image)}`;
  if (item.second_opinion) {
    // Another reviewer contradicted a confident model. Their answer, and the model's guess
    // (with two classes it would give theirs away), stay hidden: this answer is one's own.
    $("guess").textContent =
      "Second opinion: another reviewer answered this photo, and yours decides it. " +
      "Their answer and the model's guess are hidden, so that yours is your own.";
    return;
  }
  const percent = Math.round(Number(item.confidence) * 100);
  if (item.review_reason === "unfamiliar") {
    // Never routed, whatever its confidence: the person says what it is, or "neither".
    $("guess").textContent =
      `Unfamiliar: the model has not seen photos like this one ` +
      `(its guess: ${item.label}, ${percent}% sure).`;
    return;
  }
  const reason = item.review_reason ? ` (${item.review_reason})` : "";
  $("guess").textContent = `The model says ${item.label}, ${percent}% sure${reason}.`;
}

async function loadNext(after) {
  let path = "/api/next";
  if (after) {
    const query = new URLSearchParams({ after: after.image, queued_at: after.queued_at });
    path += `?${query}`;
  }
  const { status, data } = await call("GET", path);
  if (status !== 200) {
    say(data.error);
    return;
  }
  $("reviewer").textContent = `reviewing as ${data.reviewer}`;
  showCount(data.pending);
  show(data.item);
}

async function answer(choice) {
  const item = state.item;
  if (item === null) return;
  const { status, data } = await call("POST", "/api/answer", {
    image: item.image,
    answer: choice,
    revision: item.revision || 0,
  });
  if (status === 200 && data.item.review_pending !== undefined) {
    // Answered yet still queued: held for a second opinion (docs/review.md), not taken,
    // so there is nothing to undo.
    say(`${choice}: held. It contradicts a confident model, so it waits for another reviewer.`);
    await loadNext(null);
  } else if (status === 200) {
    state.answered.push({ image: item.image, revision: data.item.revision });
    $("undo").disabled = false;
    say(`${choice}: saved.`);
    await loadNext(null);
  } else if (status === 409) {
    say(`Not saved: ${data.error}.`);
    await loadNext(null);
  } else {
    say(`Not saved: ${data.error}`);
  }
}

async function undo() {
  const last = state.answered[state.answered.length - 1];
  if (last === undefined) return;
  const { status, data } = await call("POST", "/api/undo", last);
  if (status === 200 || status === 409) state.answered.pop();
  $("undo").disabled = state.answered.length === 0;
  if (status === 200) {
    say("Undone: answer it again.");
    showCount(data.pending);
    show(data.item);
  } else {
    say(`Cannot undo: ${data.error}`);
  }
}

async function skip() {
  if (state.item === null) return;
  await loadNext({ image: state.item.image, queued_at: state.item.queued_at });
}

async function act(action) {
  if (state.busy) return; // one request at a time: no double answers
  state.busy = true;
  document.body.setAttribute("aria-busy", "true");
  try {
    await action();
  } catch (error) {
    say(`The review server did not answer: ${error}`);
  } finally {
    state.busy = false;
    document.body.removeAttribute("aria-busy");
  }
}

function start() {
  const photo = $("photo");
  photo.addEventListener("load", () => {
    const small = Math.max(photo.naturalWidth, photo.naturalHeight) <= SMALL_PIXELS;
    photo.classList.toggle("small", small);
    photo.dataset.loaded = photo.dataset.image;
  });
  for (const button of document.querySelectorAll("button[data-answer]")) {
    button.addEventListener("click", () => act(() => answer(button.dataset.answer)));
  }
  $("skip").addEventListener("click", () => act(skip));
  $("undo").addEventListener("click", () => act(undo));
  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.metaKey || event.repeat) return;
    const key = event.key.toLowerCase();
    if (event.ctrlKey) {
      if (key === "z") act(undo);
      return;
    }
    if (KEYS[key]) act(() => answer(KEYS[key]));
    else if (key === "s") act(skip);
    else if (key === "u") act(undo);
    else return;
    event.preventDefault();
  });
  act(() => loadNext(null));
}

start();
