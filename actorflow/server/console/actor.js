// An actor's page: its status, the state its last turn checkpointed, the operator's
// actions, its invocations and the timeline of its journal; refreshed while shown (each
// part redrawn only when what the server says of it changed).

import { all, api, page } from "./api.js";
import { badge, block, facts, fill, h, invocationLink } from "./dom.js";
import { deliverForm, invocationAction, resetPanel } from "./actions.js";
import { timeline } from "./timeline.js";
import { live } from "./ui.js";
import { divergence } from "./stuck.js";

// The journal shown: at most this many entries (a note says when there are more).
const JOURNAL_MAX = 2000;

/** `part` redrawn by `draw(value)` only when `value` differs from what it shows. */
function changes(part, draw) {
  let shown = null;
  return (value) => {
    const text = JSON.stringify(value);
    if (text === shown) return;
    shown = text;
    fill(part, draw(value));
  };
}

export async function actorView(main, { type, key }, signal) {
  const actor = `${type}/${key}`;
  const base = `/v1/actors/${actor}`;
  const statusPart = h("section", { class: "card", id: "status" });
  const resetPart = h("div", { id: "reset-area" });
  const invocationsPart = h("section", { id: "invocations" });
  const timelinePart = h("section", { id: "timeline" });
  let update = async () => {};
  const refresh = () => update();
  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/actors" }, "Actors"), " / ", type, " / "),
    h("h1", {}, actor),
    h("div", { class: "columns" }, h("div", {}, statusPart, resetPart), h("div", {}, deliverForm(actor, refresh))),
    h("h2", {}, "Invocations"),
    invocationsPart,
    h("h2", {}, "Journal"),
    timelinePart,
  );

  const drawStatus = changes(statusPart, (status) => [
    h("h2", {}, "Status"),
    facts([
      ["state", badge(status.state)],
      ["type", type],
      ["code version", status.version || "–"],
      ["owner", status.owner || "– (this server)"],
      ["turns", String(status.turns)],
      ["running", status.invocation ? h("a", { href: invocationLink(status.invocation) }, status.invocation.split("#")[1]) : null],
      ["diverged at", status.diverged_at ? `journal position ${status.diverged_at}` : null],
      ["attention", status.attention && status.attention.length ? status.attention.join(", ") : null],
    ]),
    status.error ? h("pre", { class: "error-text", id: "actor-error" }, status.error) : "",
    divergence(status.error),
    status.damage ? block(status.damage, "damage") : "",
  ]);
  let resetShown = null;
  const drawReset = (status) => {
    const wanted = ["stuck", "held"].includes(status.state) ? `${status.state}:${status.turns}` : null;
    if (wanted === resetShown || resetPart.querySelector("#reset-done")) return;
    resetShown = wanted;
    fill(resetPart, wanted ? resetPanel(actor, status, refresh) : "");
  };
  const actionCell = (invocation) => {
    const where = h("span", { class: "action-result" });
    const buttons = [];
    if (["queued", "running"].includes(invocation.state))
      buttons.push(
        h("button", { type: "button", class: "small", "data-action": "cancel", onclick: () => invocationAction(invocation.invocation, "cancel", where, refresh) }, "Cancel"),
      );
    if (invocation.retryable)
      buttons.push(
        h("button", { type: "button", class: "small", "data-action": "retry", onclick: () => invocationAction(invocation.invocation, "retry", where, refresh) }, "Retry"),
      );
    return [buttons, where];
  };
  const drawInvocations = changes(invocationsPart, (invocations) =>
    invocations.items.length
      ? [
          h(
            "table",
            { class: "list", id: "invocation-list" },
            h("thead", {}, h("tr", {}, ["invocation", "handler", "state", "result or error", "actions"].map((name) => h("th", {}, name)))),
            h(
              "tbody",
              {},
              invocations.items.map((invocation) =>
                h(
                  "tr",
                  { "data-invocation": invocation.invocation, "data-state": invocation.state },
                  h("td", { "data-label": "invocation" }, h("a", { href: invocationLink(invocation.invocation) }, invocation.invocation.split("#")[1])),
                  h("td", { "data-label": "handler" }, invocation.handler || "–"),
                  h("td", { "data-label": "state" }, badge(invocation.state)),
                  h(
                    "td",
                    { "data-label": "result or error" },
                    invocation.error
                      ? h("span", { class: "error-text" }, `${invocation.error_type || "error"}: ${invocation.error}`)
                      : block(invocation.result),
                    invocation.compensated.length ? h("div", { class: "muted" }, `compensated: ${invocation.compensated.join(", ")}`) : "",
                    invocation.compensation_failed.length
                      ? h("div", { class: "error-text" }, `compensation failed: ${invocation.compensation_failed.join(", ")}`)
                      : "",
                  ),
                  h("td", { "data-label": "actions" }, actionCell(invocation)),
                ),
              ),
            ),
          ),
          invocations.next ? h("p", { class: "muted" }, "Latest 100 shown (actorflow invocations lists them all).") : "",
        ]
      : h("p", { class: "muted" }, "No invocations yet."),
  );
  const drawTimeline = changes(timelinePart, ({ entries, checkpoint, divergedAt }) => [
    timeline(entries, checkpoint, divergedAt),
    entries.length >= JOURNAL_MAX ? h("p", { class: "muted" }, `The first ${JOURNAL_MAX} entries are shown (actorflow journal ${actor} prints them all).`) : "",
  ]);

  update = async () => {
    const [status, invocations, checkpoint, entries] = await Promise.all([
      api(base, { signal }),
      page(`${base}/invocations?limit=100`, { signal }),
      api(`${base}/checkpoint`, { signal }),
      all(`${base}/journal?limit=1000`, JOURNAL_MAX, { signal }),
    ]);
    if (signal.aborted) return;
    drawStatus(status);
    drawReset(status);
    drawInvocations(invocations);
    drawTimeline({ entries, checkpoint, divergedAt: status.diverged_at });
  };
  await update();
  live(signal, update, 2000);
}
