// An actor's journal as a timeline: its checkpoint, its turns with their steps (with
// durations), retries and errors, timers (with their due time), events, messages to other
// actors and compensations, then its inbox (messages and events received).

import { block, brief, duration, h, invocationLink, when } from "./dom.js";

function errorText(error) {
  return error ? `${error.type}: ${error.message}` : "";
}

function line(kind, entry, title, ...details) {
  return h(
    "li",
    { class: `entry entry-${kind}`, "data-type": entry.type, "data-position": entry.position },
    h("span", { class: "at", title: `journal position ${entry.position}` }, when(entry.at)),
    h("span", { class: "kind" }, kind),
    h("div", { class: "what" }, h("div", {}, title), details),
  );
}

function stepLine(entry, took, tookLabel) {
  const data = entry.data;
  const time = took === null ? "" : `${tookLabel} ${duration(took)}`;
  switch (data.kind) {
    case "send":
      return line(
        "message",
        entry,
        `sent ${data.name}`,
        h("span", { class: "detail" }, "invocation ", h("a", { href: invocationLink(String(data.value)) }, String(data.value))),
      );
    case "event":
      return line("event", entry, `event ${data.name} received`, block(data.value, "payload"));
    case "undo":
      return line("compensation", entry, `compensated ${data.name}`, time && h("span", { class: "detail" }, time));
    default:
      return line(
        "step",
        entry,
        `step ${data.name}${data.kind === "run" ? "" : ` (${data.kind})`}`,
        h(
          "span",
          { class: "detail" },
          [time, data.attempts > 1 ? `${data.attempts} attempts` : ""].filter(Boolean).join(" · "),
        ),
        block(data.value, "result"),
      );
  }
}

function actorLine(entry, previousAt, started) {
  const data = entry.data;
  switch (entry.type) {
    case "step": {
      const from = started.get(data.step);
      const took = from !== undefined ? entry.at - from : previousAt ? entry.at - previousAt : null;
      return stepLine(entry, took, from !== undefined ? "took" : "after the previous entry:");
    }
    case "step_started":
      started.set(data.step, entry.at);
      return line("step", entry, `step ${data.name} started`, data.attempt > 1 ? `attempt ${data.attempt}` : "");
    case "step_retry":
      return line(
        "retry",
        entry,
        `attempt ${data.attempt} of ${data.name} failed; next attempt at ${when(data.retry_at)}`,
        h("span", { class: "error-text" }, errorText(data.error)),
      );
    case "step_failed":
      return line(
        "error",
        entry,
        `step ${data.name} failed${data.attempts > 1 ? ` after ${data.attempts} attempts` : ""}`,
        h("span", { class: "error-text" }, errorText(data.error)),
      );
    case "timer":
      return line(
        "timer",
        entry,
        `timer ${data.name} due at ${when(data.fire_at)}`,
        h("span", { class: "detail" }, `in ${duration(data.fire_at - entry.at)}`),
      );
    case "turn_cancelling":
      return line("cancel", entry, `cancelling: ${data.reason}`);
    case "turn_done":
      return line(
        "end",
        entry,
        "turn completed",
        data.compensated && data.compensated.length ? h("div", {}, `compensated ${data.compensated.join(", ")}`) : "",
        block(data.result, "result"),
      );
    case "turn_failed":
      return line(
        "error",
        entry,
        data.cancelled ? "turn cancelled" : "turn failed",
        h("span", { class: "error-text" }, errorText(data.error)),
        data.compensated && data.compensated.length ? h("div", {}, `compensated ${data.compensated.join(", ")}`) : "",
        data.compensation_failed && data.compensation_failed.length
          ? h("div", { class: "error-text" }, `compensation failed: ${data.compensation_failed.join(", ")}`)
          : "",
      );
    case "turn_continued":
      return line("turn", entry, `continued as new: ${data.handler}`, block(data.args, "arguments"));
    default:
      return line(entry.type, entry, brief(data));
  }
}

/** The timeline of `entries` (a journal listing), marking the entry at `divergedAt`. */
export function timeline(entries, checkpoint, divergedAt) {
  const parts = [];
  if (checkpoint && checkpoint.turn > 0) {
    parts.push(
      h(
        "section",
        { class: "card snapshot", id: "snapshot" },
        h("h3", {}, `Snapshot: checkpoint of turn ${checkpoint.turn}`),
        h(
          "p",
          { class: "muted" },
          `Covers the actor's journal up to position ${checkpoint.covers}; covered records are deleted every --snapshot-every turns.`,
        ),
        block(checkpoint.state, "state"),
      ),
    );
  }
  const turns = [];
  let turn = null;
  let previousAt = 0;
  const started = new Map();
  const inbox = [];
  for (const entry of entries) {
    if (entry.stream === "inbox") {
      inbox.push(entry);
      continue;
    }
    if (entry.type === "turn") {
      const data = entry.data;
      started.clear();
      turn = {
        number: data.turn,
        items: [],
        head: h(
          "header",
          {},
          h("h3", {}, `Turn ${data.turn}: ${data.handler}`),
          h("span", { class: "muted" }, when(entry.at)),
          h("a", { href: invocationLink(data.invocation) }, data.invocation.split("#")[1]),
          data.version ? h("span", { class: "muted" }, `code ${data.version}`) : "",
          block(data.args, "arguments"),
        ),
      };
      turns.push(turn);
      previousAt = entry.at;
      continue;
    }
    if (turn === null) {
      turn = { number: entry.data.turn, items: [], head: h("header", {}, h("h3", {}, "Before the journal shown")) };
      turns.push(turn);
    }
    const item = actorLine(entry, previousAt, started);
    if (divergedAt && entry.position === divergedAt) {
      item.classList.add("diverged");
      item.append(h("strong", { class: "diverged-mark" }, "replay diverged here"));
    }
    turn.items.push(item);
    if (entry.at) previousAt = entry.at;
  }
  for (const { number, head, items } of turns) {
    parts.push(h("section", { class: "turn", "data-turn": number }, head, h("ol", { class: "entries" }, items)));
  }
  if (inbox.length) {
    parts.push(
      h(
        "section",
        { class: "turn inbox", id: "inbox" },
        h("header", {}, h("h3", {}, "Inbox: received")),
        h(
          "ol",
          { class: "entries" },
          inbox.map((entry) => {
            const data = entry.data;
            if (entry.type === "message")
              return line(
                "message",
                entry,
                `message ${data.handler}`,
                h("a", { href: invocationLink(data.invocation) }, data.invocation.split("#")[1]),
                data.retry_of ? " (a retry)" : "",
                block(data.args, "arguments"),
              );
            if (entry.type === "event") return line("event", entry, `event ${data.name} delivered`, block(data.payload, "payload"));
            if (entry.type === "cancel") return line("cancel", entry, `cancel of ${data.invocation}`);
            return line(entry.type, entry, brief(data));
          }),
        ),
      ),
    );
  }
  if (!parts.length) parts.push(h("p", { class: "muted" }, "Nothing journaled yet."));
  return parts;
}

