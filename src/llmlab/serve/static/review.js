// The review page: shows the server's current pair and sends each choice. Every text from the pairs
// file goes in with textContent (never innerHTML): a prompt holding markup is shown as text.
"use strict";

const KEYS = {
  ArrowLeft: "left", "1": "left",
  ArrowRight: "right", "2": "right",
  ArrowDown: "tie", "3": "tie",
  t: "tie",
  s: "skip",
  u: "undo", Backspace: "undo",
};

let current = null;  // the state last received from the server
let busy = false;    // a request is in flight: keys pressed meanwhile are dropped, never queued

const $ = (id) => document.getElementById(id);

function show(state) {
  current = state;
  const c = state.counts;
  $("progress").textContent = `${state.labelled} / ${state.total} labelled`;
  $("counts").textContent = `(a ${c.a}, b ${c.b}, tie ${c.tie}, skip ${c.skip})`;
  $("review").hidden = state.pair === null;
  $("done").hidden = state.pair !== null;
  if (state.pair !== null) {
    $("pair-index").textContent = `(pair ${state.pair.index})`;
    $("prompt").textContent = state.pair.prompt;
    $("left").textContent = state.pair.left;
    $("right").textContent = state.pair.right;
  }
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function call(method, path, body) {
  if (busy) return;
  busy = true;
  try {
    const response = await fetch(path, {
      method,
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await response.json().catch(() => ({}));
    if (response.ok) return data;
    status(data.error || `not saved: the server answered ${response.status}`, true);
    // the page was stale (another tab, nothing to undo): show what the server holds
    if (response.status === 409) show(await (await fetch("/api/state")).json());
  } catch (e) {
    status(`not saved: the server cannot be reached (${e.message})`, true);
  } finally {
    busy = false;
  }
  return null;
}

async function choose(choice) {
  if (choice === "undo") {
    const state = await call("POST", "/api/undo");
    if (state) { show(state); status(`undone: pair ${state.pair.index} is back`); }
    return;
  }
  if (current === null || current.pair === null) return;
  const index = current.pair.index;
  const state = await call("POST", "/api/label", { pair: index, choice });
  if (state) { show(state); status(`saved: pair ${index}: ${choice}`); }
}

document.addEventListener("keydown", (event) => {
  if (event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
  const choice = KEYS[event.key];
  if (choice === undefined) return;
  event.preventDefault();  // Backspace must not navigate, arrows must not scroll
  choose(choice);
});

for (const button of document.querySelectorAll("button[data-choice]")) {
  button.addEventListener("click", () => choose(button.dataset.choice));
}
$("undo").addEventListener("click", () => choose("undo"));
$("undo-last").addEventListener("click", () => choose("undo"));

fetch("/api/state").then((r) => r.json()).then(show, (e) => status(`cannot load: ${e.message}`, true));
