// What every view shares: the notice above the page, failures shown where they happen (a
// refused token opens the token prompt), and live updates by bounded polling.

import { ApiFailure, setToken, token } from "./api.js";
import { fill, h } from "./dom.js";

const main = () => document.getElementById("main");
const notice = () => document.getElementById("notice");

/** Show a message above the page (`null` hides it). */
export function say(message, kind = "info") {
  notice().hidden = !message;
  notice().className = `notice ${kind}`;
  fill(notice(), message || "");
}

/** A failure shown where it happened: a refused token opens the token prompt. */
export function showFailure(where, error) {
  if (error instanceof ApiFailure && error.status === 401) {
    askToken(error);
    return;
  }
  const text = error instanceof ApiFailure ? `${error.type}: ${error.message}` : String(error);
  fill(where, h("p", { class: "error", role: "alert" }, text));
}

/**
 * Call `update()` again `every` ms after each call ends (the view made the first call
 * itself), while the view is shown: it stops when `signal` aborts (the view was left),
 * and skips its turns while the tab is hidden. Failures are shown and retried.
 */
export async function live(signal, update, every = 2000) {
  for (;;) {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, every);
      signal.addEventListener("abort", () => resolve(clearTimeout(timer)), { once: true });
    });
    if (signal.aborted) return;
    if (document.hidden) continue;
    try {
      await update();
      if (notice().classList.contains("stale")) say(null);
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiFailure && error.status === 401) return askToken(error);
      say(`Live updates failed (retrying): ${error.message}`, "stale");
    }
  }
}

export function askToken(error) {
  window.dispatchEvent(new Event("actorflow:token-needed"));
  const given = token();
  const why = given
    ? `The server refused this token: ${error.message}`
    : "This server needs its bearer token (the one it was started with).";
  const input = h("input", {
    type: "password",
    id: "token",
    name: "token",
    autocomplete: "off",
    required: true,
    "aria-label": "token",
  });
  const form = h(
    "form",
    { class: "card token", id: "token-form" },
    h("h1", {}, "Token"),
    h("p", { class: given ? "error" : "", role: given ? "alert" : null }, why),
    h("label", { for: "token" }, "Bearer token"),
    input,
    h("button", { type: "submit" }, "Use this token"),
    h("p", { class: "muted" }, "Kept for this browser tab only (sessionStorage)."),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    window.dispatchEvent(new Event("actorflow:token-given"));
  });
  fill(main(), form);
  input.focus();
}

