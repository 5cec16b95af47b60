// The console's entry point: the router (URL fragments), the token prompt, and the live
// updates of the page shown (each view polls while it is shown, and stops when left).

import { setToken, token } from "./api.js";
import { fill, h } from "./dom.js";
import { say, showFailure } from "./ui.js";
import { actorsView } from "./actors.js";
import { actorView } from "./actor.js";
import { invocationView } from "./invocation.js";
import { stuckView } from "./stuck.js";

const main = document.getElementById("main");
const forget = document.getElementById("forget-token");
let current = null;

const ROUTES = [
  [/^#\/actors(?:\?(.*))?$/, (m) => ["actors", actorsView, new URLSearchParams(m[1] || "")]],
  [/^#\/actor\/([^/]+)\/([^/?#]+)$/, (m) => ["actors", actorView, { type: m[1], key: m[2] }]],
  [
    /^#\/invocation\/([^/]+)\/([^/]+)\/([0-9a-f]+)$/,
    (m) => ["actors", invocationView, { type: m[1], key: m[2], hex: m[3] }],
  ],
  [/^#\/stuck$/, () => ["stuck", stuckView, null]],
];

function route() {
  if (current) current.abort();
  current = new AbortController();
  say(null);
  forget.hidden = !token();
  const hash = location.hash || "#/actors";
  for (const [pattern, make] of ROUTES) {
    const match = pattern.exec(hash);
    if (!match) continue;
    const [section, view, params] = make(match);
    for (const link of document.querySelectorAll("[data-nav]")) {
      link.classList.toggle("active", link.dataset.nav === section);
    }
    const signal = current.signal;
    view(main, params, signal).catch((error) => {
      if (!signal.aborted) showFailure(main, error);
    });
    return;
  }
  fill(main, h("p", { class: "error" }, "No such page. "), h("a", { href: "#/actors" }, "Actors"));
}

forget.addEventListener("click", () => {
  setToken("");
  route();
});
window.addEventListener("hashchange", route);
window.addEventListener("actorflow:token-given", route);
window.addEventListener("actorflow:token-needed", () => current && current.abort());
route();
