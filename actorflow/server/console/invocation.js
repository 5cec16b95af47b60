// An invocation's page: its status, and its live token stream (server-sent events, read
// as they come: chunks appended, an attempt's text dropped when a retry supersedes it).

import { api, follow } from "./api.js";
import { actorLink, badge, block, facts, fill, h } from "./dom.js";
import { live, showFailure } from "./ui.js";

export async function invocationView(main, { type, key, hex }, signal) {
  const actor = `${type}/${key}`;
  const path = `/v1/actors/${actor}/invocations/${hex}`;
  const statusPart = h("section", { class: "card", id: "invocation-status" });
  const text = h("pre", { class: "stream", id: "stream-text", "aria-live": "polite" });
  const streamState = h("p", { class: "muted", id: "stream-state" }, "Connecting…");
  const log = h("ol", { class: "entries", id: "stream-events" });
  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/actors" }, "Actors"), " / ", h("a", { href: actorLink(actor) }, actor), " / "),
    h("h1", {}, `Invocation ${hex}`),
    statusPart,
    h("h2", {}, "Live stream"),
    streamState,
    text,
    h("details", {}, h("summary", {}, "Events"), log),
  );
  let ended = false;
  const update = async () => {
    const status = await api(path, { signal });
    fill(
      statusPart,
      facts([
        ["state", badge(status.state)],
        ["handler", status.handler || "–"],
        ["error", status.error ? `${status.error_type}: ${status.error}` : null],
        ["compensated", status.compensated.length ? status.compensated.join(", ") : null],
      ]),
      status.state === "completed" ? block(status.result, "result") : "",
    );
    if (["completed", "failed", "cancelled"].includes(status.state)) ended = true;
  };
  await update();

  // Each attempt's text, in order: a superseded attempt's text is dropped.
  const attempts = new Map();
  const show = () => fill(text, [...attempts.values()].join(""));
  follow(
    `${path}/stream`,
    (event) => {
      fill(streamState, "Streaming…");
      const attempt = event.id && event.id !== "end" ? event.id.split(":")[0] : null;
      log.append(h("li", {}, `${event.kind} ${event.id || ""} `, block(event.data)));
      if (event.kind === "chunk") {
        const chunk = typeof event.data === "string" ? event.data : JSON.stringify(event.data);
        attempts.set(attempt, (attempts.get(attempt) || "") + chunk);
        show();
      } else if (event.kind === "superseded") {
        attempts.delete(String(event.data.attempt));
        show();
      } else if (event.kind === "end") {
        fill(streamState, `Ended: ${event.data.state}`);
        update().catch(() => {});
      }
    },
    signal,
  ).catch((error) => {
    if (!signal.aborted) showFailure(streamState, error);
  });
  const poll = async () => {
    if (!ended) await update();
  };
  live(signal, poll, 2000);
}
