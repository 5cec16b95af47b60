// Building the page. Every value from the server (actor keys, states, payloads, errors)
// goes into the page as text (`textContent`), never as markup: a journal may hold
// anything, including "<script>".

/** An element: `h("td", {class: "x", title: "y"}, "text", child, ...)`. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  add(element, children);
  return element;
}

function add(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) add(element, child);
    else if (child instanceof Node) element.append(child);
    else element.append(document.createTextNode(String(child)));
  }
}

/** Replace what `element` holds with `children`. */
export function fill(element, ...children) {
  element.replaceChildren();
  add(element, children);
  return element;
}

/** A JSON value as indented text, for a <pre>. */
export function json(value) {
  if (value === undefined) return "";
  return JSON.stringify(value, null, 2);
}

/** A short one-line form of a JSON value (cut at `limit` characters). */
export function brief(value, limit = 120) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  if (text === undefined) return "";
  return text.length > limit ? `${text.slice(0, limit)}…` : text;
}

/** A journal time (seconds since the epoch) as date and time, UTC, to the millisecond. */
export function when(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toISOString().replace("T", " ").replace("Z", " UTC");
}

/** A duration in seconds, readable. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/** The URL fragment of an actor's page, and of an invocation's. */
export function actorLink(actor) {
  return `#/actor/${actor}`;
}

export function invocationLink(invocation) {
  const [actor, hex] = invocation.split("#");
  return `#/invocation/${actor}/${hex}`;
}

/** A state as a badge. */
export function badge(state) {
  return h("span", { class: `badge state-${String(state).replace(/[^a-z-]/g, "")}` }, state);
}

/** A labelled list of facts: `facts([["state", badge], ...])`. */
export function facts(rows) {
  return h(
    "dl",
    { class: "facts" },
    rows
      .filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([label, value]) => h("div", {}, h("dt", {}, label), h("dd", {}, value))),
  );
}

/** A JSON value shown in a <pre> (folded when long). */
export function block(value, label = "") {
  const text = json(value);
  const pre = h("pre", { class: "value" }, text);
  if (text.length < 400) return label ? h("div", {}, h("span", { class: "muted" }, label), pre) : pre;
  return h("details", {}, h("summary", {}, label || brief(value, 60)), pre);
}
