// Talking to the API: the bearer token (kept in sessionStorage for this tab's session),
// JSON requests, pages that follow `Link: <...>; rel="next"`, and server-sent events read
// with fetch (EventSource cannot send the Authorization header).

const TOKEN_KEY = "actorflow.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** A refused request: its HTTP status, the API's error type and message. */
export class ApiFailure extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

function headers(extra = {}) {
  const given = token();
  return given ? { Authorization: `Bearer ${given}`, ...extra } : extra;
}

async function failure(response) {
  let type = "http_error";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) ({ type, message } = body.error);
  } catch {
    // not JSON: the status says it all
  }
  return new ApiFailure(response.status, type, message);
}

async function request(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: headers(), signal, cache: "no-store" };
  if (body !== undefined) {
    init.headers = headers({ "Content-Type": "application/json" });
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response;
}

/** GET or POST `path`; the answer's JSON. */
export async function api(path, options = {}) {
  const response = await request(path, options);
  return response.json();
}

/** One page of a listing: `{items, next}`, `next` the URL of the following page or null. */
export async function page(path, options = {}) {
  const response = await request(path, options);
  const link = response.headers.get("Link") || "";
  const match = /<([^>]*)>;\s*rel="next"/.exec(link);
  return { items: await response.json(), next: match ? match[1] : null };
}

/** Every item of a listing, following its pages (at most `max` items). */
export async function all(path, max = 5000, options = {}) {
  const items = [];
  let next = path;
  while (next && items.length < max) {
    const got = await page(next, options);
    items.push(...got.items);
    next = got.next;
  }
  return items;
}

/** The actor types this server hosts (from its API document). */
export async function actorTypes() {
  const document = await api("/openapi.json");
  const types = new Set();
  for (const path of Object.keys(document.paths || {})) {
    const match = /^\/v1\/actors\/([^/{}]+)\/\{key\}\/messages\//.exec(path);
    if (match) types.add(match[1]);
  }
  return [...types].sort();
}

/**
 * Follow an invocation's event stream: `onEvent({id, kind, data})` for each event, until
 * `end` or until `signal` aborts. Resumes after the last event when the connection drops
 * (at most `retries` times in a row, a second apart).
 */
export async function follow(path, onEvent, signal, retries = 30) {
  let last = null;
  let failures = 0;
  while (!signal.aborted) {
    try {
      const extra = last ? { "Last-Event-ID": last } : {};
      const response = await fetch(path, { headers: headers(extra), signal, cache: "no-store" });
      if (!response.ok) throw await failure(response);
      failures = 0;
      const ended = await readEvents(response, (event) => {
        if (event.id) last = event.id;
        onEvent(event);
      });
      if (ended) return;
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiFailure && error.status < 500) throw error;
      if (++failures > retries) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const raw = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = { id: null, kind: "message", data: null };
      const data = [];
      for (const line of raw.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") event.id = text;
        else if (field === "event") event.kind = text;
        else if (field === "data") data.push(text);
      }
      if (!data.length) continue;
      event.data = JSON.parse(data.join("\n"));
      onEvent(event);
      if (event.kind === "end") {
        await reader.cancel();
        return true;
      }
    }
  }
}
