"use strict";
const token = new URLSearchParams(location.search).get("token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
let shown = -1;

async function refresh() {
  const r = await (await fetch(withToken("api/order"))).json();
  if (r.version === shown) return;
  shown = r.version;
  const strip = document.getElementById("strip");
  strip.replaceChildren();
  document.getElementById("info").textContent = r.version ? "model " + r.version + ": " + r.items.length + " of " + r.total + " images" : "no model yet: judge some pairs first";
  r.items.forEach((name, k) => {
    const fig = document.createElement("figure");
    const cls = r.classes ? r.classes[k] : null;
    if (cls !== null && k > 0 && r.classes[k - 1] !== cls) fig.className = "boundary";
    const img = document.createElement("img");
    img.src = withToken("img/" + name.split("/").map(encodeURIComponent).join("/"));
    img.alt = name; img.title = name;
    fig.append(img);
    const cap = document.createElement("figcaption");
    cap.textContent = cls !== null ? "class " + cls : String(k + 1);
    fig.append(cap);
    strip.append(fig);
  });
}
const events = new EventSource(withToken("api/events"));
events.onmessage = (e) => { if (JSON.parse(e.data).version !== shown) refresh(); };
refresh();
