// The actors: a page of them with their state, type, code version and owner, filtered by
// type and state, a page at a time; refreshed while shown.

import { actorTypes, page } from "./api.js";
import { actorLink, badge, fill, h, invocationLink } from "./dom.js";
import { live } from "./ui.js";

export const STATES = [
  "idle",
  "running",
  "waiting-timer",
  "waiting-event",
  "waiting-retry",
  "retrying",
  "stuck",
  "held",
  "corrupt",
  "pending",
];
const PAGE_SIZE = 50;

function hashOf(query) {
  const kept = [...query.entries()].filter(([, value]) => value);
  return `#/actors${kept.length ? `?${new URLSearchParams(kept)}` : ""}`;
}

export async function actorsView(main, query, signal) {
  const type = query.get("type") || "";
  const state = query.get("state") || "";
  const cursor = query.get("cursor") || "";
  const size = /^[1-9][0-9]{0,2}$/.test(query.get("limit") || "") ? query.get("limit") : String(PAGE_SIZE);
  const types = await actorTypes();
  const apiQuery = new URLSearchParams({ limit: size });
  const limit = size === String(PAGE_SIZE) ? "" : size;
  if (type) apiQuery.set("type", type);
  if (state) apiQuery.set("state", state);
  if (cursor) apiQuery.set("cursor", cursor);
  const path = `/v1/actors?${apiQuery}`;

  const select = (name, values, chosen, all) =>
    h(
      "select",
      { name, id: `filter-${name}`, "aria-label": name },
      h("option", { value: "" }, all),
      values.map((value) => h("option", { value, selected: value === chosen }, value)),
    );
  const typeSelect = select("type", types, type, "every type");
  const stateSelect = select("state", STATES, state, "every state");
  const filters = h(
    "form",
    { class: "filters", id: "filters" },
    h("label", {}, "Type ", typeSelect),
    h("label", {}, "State ", stateSelect),
  );
  const apply = () => {
    location.hash = hashOf(new URLSearchParams({ type: typeSelect.value, state: stateSelect.value, limit }));
  };
  typeSelect.addEventListener("change", apply);
  stateSelect.addEventListener("change", apply);
  filters.addEventListener("submit", (event) => event.preventDefault());

  const body = h("tbody");
  const pager = h("nav", { class: "pager", "aria-label": "pages" });
  const count = h("p", { class: "muted", id: "actor-count" });
  fill(
    main,
    h("h1", {}, "Actors"),
    filters,
    count,
    h(
      "table",
      { class: "list", id: "actors" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["actor", "type", "state", "code version", "owner", "turns", "running"].map((name) =>
            h("th", {}, name),
          ),
        ),
      ),
      body,
    ),
    pager,
  );

  const update = async () => {
    const got = await page(path, { signal });
    fill(
      body,
      got.items.map((actor) => {
        const [actorType, ...rest] = actor.actor.split("/");
        return h(
          "tr",
          { "data-actor": actor.actor },
          h("td", { "data-label": "actor" }, h("a", { href: actorLink(actor.actor) }, rest.join("/"))),
          h("td", { "data-label": "type" }, actorType),
          h("td", { "data-label": "state" }, badge(actor.state)),
          h("td", { "data-label": "code version" }, actor.version || "–"),
          h("td", { "data-label": "owner" }, actor.owner || "–"),
          h("td", { "data-label": "turns" }, String(actor.turns)),
          h(
            "td",
            { "data-label": "running" },
            actor.invocation ? h("a", { href: invocationLink(actor.invocation) }, "watch") : "–",
          ),
        );
      }),
    );
    fill(
      count,
      got.items.length
        ? `${got.items.length} actor${got.items.length === 1 ? "" : "s"} on this page`
        : "No actors on this page.",
    );
    const links = [];
    if (cursor) links.push(h("a", { href: hashOf(new URLSearchParams({ type, state, limit })) }, "First page"));
    if (got.next) {
      const next = new URL(got.next, location.origin).searchParams.get("cursor");
      links.push(
        h("a", { href: hashOf(new URLSearchParams({ type, state, limit, cursor: next })), rel: "next" }, "Next page"),
      );
    }
    fill(pager, links);
  };
  await update();
  live(signal, update, 3000);
}
