// Actors that need an operator: stuck (their code no longer matches their journal, or a
// step's result cannot be used), held (a pinned type waiting for its code version) and
// corrupt (a damaged journal), each with its error, where its replay diverged (what the
// journal recorded and what the code now does), and what can be done.

import { all } from "./api.js";
import { actorLink, badge, block, facts, fill, h } from "./dom.js";
import { resetPanel } from "./actions.js";
import { live } from "./ui.js";

const NEEDING = ["stuck", "held", "corrupt"];
// Listing by state reads every actor's status: refreshed less often than other pages.
const EVERY_MS = 10000;
// How a stuck actor's error (NonDeterminismError) and a held one's say where they diverged.
const PATTERN = /the journal recorded (.*?), but the code now does (.*?)\. (?:The actor is stuck|New messages wait)/s;

/** What the journal recorded and what the code now does, from a divergence's error. */
export function divergence(error) {
  const match = error ? PATTERN.exec(error) : null;
  if (!match) return "";
  return h(
    "table",
    { class: "divergence" },
    h("tr", {}, h("th", {}, "recorded"), h("td", { class: "recorded" }, match[1])),
    h("tr", {}, h("th", {}, "new code"), h("td", { class: "requested" }, match[2])),
  );
}

function advice(status) {
  if (status.state === "corrupt")
    return 'Its journal is damaged: export what is readable (actorflow export) and see "A damaged journal" in docs/actors.md.';
  if (status.state === "held")
    return "It resumes by itself once a process running the code version that started its turn takes it, or reset it.";
  return "It resumes by itself once code that matches its journal is deployed (see docs/versioning.md); or reset it to its last turn boundary, discarding its unfinished turn.";
}

export async function stuckView(main, _params, signal) {
  const list = h("div", { id: "stuck-list" });
  fill(main, h("h1", {}, "Actors that need an operator"), list);
  const shown = new Map();
  const update = async () => {
    const found = [];
    for (const state of NEEDING) found.push(...(await all(`/v1/actors?state=${state}`, 500, { signal })));
    if (signal.aborted) return;
    const ids = new Set(found.map((status) => status.actor));
    for (const [actor, card] of shown) {
      if (!ids.has(actor) && !card.element.querySelector("#reset-done")) {
        card.element.remove();
        shown.delete(actor);
      }
    }
    for (const status of found) {
      const text = JSON.stringify(status);
      const known = shown.get(status.actor);
      if (known && (known.text === text || known.element.querySelector("#reset-done"))) continue;
      const element = h(
        "article",
        { class: "card stuck", "data-actor": status.actor },
        h("h2", {}, h("a", { href: actorLink(status.actor) }, status.actor), " ", badge(status.state)),
        facts([
          ["code version", status.version || "–"],
          ["owner", status.owner || "– (this server)"],
          ["turns", String(status.turns)],
          ["diverged at", status.diverged_at ? `journal position ${status.diverged_at}` : null],
        ]),
        h("pre", { class: "error-text" }, status.error || ""),
        divergence(status.error),
        status.damage ? block(status.damage, "damage") : "",
        h("p", { class: "muted" }, advice(status)),
        status.state === "corrupt" ? "" : resetPanel(status.actor, status, update),
      );
      if (known) known.element.replaceWith(element);
      else list.append(element);
      shown.set(status.actor, { text, element });
    }
    if (!shown.size) fill(list, h("p", { class: "muted", id: "none-stuck" }, "No actor is stuck, held or corrupt."));
    else list.querySelector("#none-stuck")?.remove();
  };
  await update();
  live(signal, update, EVERY_MS);
}
