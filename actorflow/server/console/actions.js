// The operator's actions on an actor: deliver an event, cancel or retry an invocation,
// reset a stuck or held actor (after a confirmation). Each says what the server answered.

import { api } from "./api.js";
import { block, fill, h } from "./dom.js";
import { ApiFailure } from "./api.js";

function base(actor) {
  return `/v1/actors/${actor}`;
}

// Redraw the page after an action; a failure there is left to the next live update.
function after(onDone) {
  Promise.resolve()
    .then(onDone)
    .catch(() => {});
}

function outcome(where, error) {
  const text = error instanceof ApiFailure ? `${error.type}: ${error.message}` : String(error);
  fill(where, h("p", { class: "error", role: "alert" }, text));
}

/** The form that delivers an event (a name and a JSON payload) to `actor`. */
export function deliverForm(actor, onDone) {
  const name = h("input", { name: "event", id: "event-name", required: true, placeholder: "approval", autocomplete: "off" });
  const payload = h("textarea", { name: "payload", id: "event-payload", rows: 3, placeholder: '{"by": "me"}' });
  const result = h("div", { class: "result", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "action", id: "deliver-form" },
    h("h3", {}, "Deliver an event"),
    h("label", { for: "event-name" }, "Event name"),
    name,
    h("label", { for: "event-payload" }, "Payload (JSON; empty: null)"),
    payload,
    h("button", { type: "submit" }, "Deliver"),
    result,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body = null;
    if (payload.value.trim()) {
      try {
        body = JSON.parse(payload.value);
      } catch (error) {
        return outcome(result, `The payload is not JSON: ${error.message}`);
      }
    }
    try {
      await api(`${base(actor)}/events/${encodeURIComponent(name.value.trim())}`, { method: "POST", body });
      fill(result, h("p", { class: "ok" }, `Delivered ${name.value.trim()}.`));
      after(onDone);
    } catch (error) {
      outcome(result, error);
    }
  });
  return form;
}

/** Cancel or retry `invocation` (an id), showing the answer in `where`. */
export async function invocationAction(invocation, action, where, onDone) {
  const [actor, hex] = invocation.split("#");
  try {
    const status = await api(`${base(actor)}/invocations/${hex}/${action}`, { method: "POST" });
    fill(where, h("span", { class: "ok" }, `${action === "cancel" ? "Cancel" : "Retry"} accepted: ${status.state}`));
    after(onDone);
  } catch (error) {
    outcome(where, error);
  }
}

/** The reset of a stuck or held actor: a button, then a confirmation naming the turn. */
export function resetPanel(actor, status, onDone) {
  const where = h("div", { class: "action", id: "reset" });
  const ask = () =>
    fill(
      where,
      h("h3", {}, "Reset to the last turn boundary"),
      h(
        "p",
        {},
        `Discards the journal entries of unfinished turn ${status.turns} (returned below: keep them), then runs its message again from the start.`,
      ),
      h("button", { type: "button", id: "reset-start", class: "danger", onclick: confirm }, `Reset… (discard turn ${status.turns})`),
    );
  const confirm = () =>
    fill(
      where,
      h("h3", {}, "Confirm the reset"),
      h("p", { class: "error" }, `Really discard turn ${status.turns} of ${actor}? This cannot be undone.`),
      h(
        "div",
        { class: "buttons" },
        h("button", { type: "button", id: "reset-confirm", class: "danger", onclick: run }, `Discard turn ${status.turns}`),
        h("button", { type: "button", id: "reset-cancel", onclick: ask }, "Keep it"),
      ),
    );
  const run = async () => {
    try {
      const answer = await api(`${base(actor)}/reset`, { method: "POST", body: { discard_turn: status.turns } });
      fill(
        where,
        h("h3", {}, "Reset done"),
        h("p", { class: "ok", id: "reset-done" }, `Turn ${answer.turn} (${answer.handler}) discarded; its message runs again.`),
        block(answer.discarded, `the ${answer.discarded.length} discarded entries (keep them)`),
      );
      after(onDone);
    } catch (error) {
      outcome(where, error);
    }
  };
  ask();
  return where;
}
