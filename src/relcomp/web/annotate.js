"use strict";
const token = new URLSearchParams(location.search).get("token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
const $ = (id) => document.getElementById(id);
let current = null, busy = false, mine = 0;
const done = [];   // lines written in this page, newest last, with their pair: what undo takes back

function setStatus(text) { $("status").textContent = text; }
function setBanner(text) { $("banner").hidden = !text; $("banner").textContent = text || ""; }
function setProgress(p) {
  const goal = p.goal ? " of " + p.goal : "";
  $("progress").textContent = mine + " by you, " + p.judged + goal + " in all";
}

function show(pair) {
  current = pair;
  $("pair").hidden = !pair; $("keys").hidden = !pair; $("done").hidden = !!pair;
  if (!pair) { $("done-count").textContent = "(" + $("progress").textContent + ")"; return; }
  for (const [side, name] of [["a", pair[0]], ["b", pair[1]]]) {
    $("img-" + side).src = withToken("img/" + name.split("/").map(encodeURIComponent).join("/"));
    $("name-" + side).textContent = name;
  }
}

async function call(path, body) {
  const init = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  let r;
  try { r = await fetch(withToken(path), init); } catch (e) {
    throw new Error("The server is not answering (stopped?). Every judgement made so far is saved; start relcomp annotate again and reload this page.");
  }
  const data = await r.json().catch(() => ({}));
  if (!r.ok && r.status !== 409) throw new Error(data.error || (path + ": HTTP " + r.status));
  return Object.assign(data, {httpStatus: r.status});
}

async function next() {
  const r = await call("api/next");
  $("question").textContent = r.question || "Which is greater?";
  const box = $("annotator");
  if (!box.value) box.value = localStorage.getItem("relcomp-annotator") || r.annotator || "";
  setProgress(r.progress);
  show(r.pair);
}

async function act(fn) {
  if (busy) { setStatus("one moment: the next pair is loading"); return; }
  busy = true; $("pair").classList.add("busy");
  try { setStatus(""); setBanner(""); await fn(); } catch (e) { setBanner(e.message); }
  finally { busy = false; $("pair").classList.remove("busy"); }
}

function judge(outcome) {
  return act(async () => {
    if (!current) return;
    const annotator = $("annotator").value.trim();
    localStorage.setItem("relcomp-annotator", annotator);
    const r = await call("api/judge", {a: current[0], b: current[1], outcome, annotator});
    if (r.httpStatus === 409) setStatus("Someone judged that pair already; here is another.");
    else { done.push({line: r.line, pair: current}); mine += 1; }
    setProgress(r.progress);
    await next();
  });
}

function skip() {
  return act(async () => { if (current) await call("api/skip", {a: current[0], b: current[1]}); await next(); });
}

function undo() {
  return act(async () => {
    const last = done.pop();
    if (!last) { setStatus("Nothing to undo."); return; }
    const r = await call("api/undo", {line: last.line});
    if (r.undone) mine -= 1;
    setProgress(r.progress);
    setStatus(r.undone ? "Undone: judge this pair again." : "Could not undo (already changed on disk).");
    if (r.undone) show(last.pair);
  });
}

function sparkline(history) {
  const pts = history.filter((h) => h.agreement !== null);
  const svg = $("spark");
  if (pts.length < 1) { svg.replaceChildren(); return; }
  const step = pts.length > 1 ? 78 / (pts.length - 1) : 0;
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts.map((h, k) => (1 + k * step) + "," + (19 - 18 * h.agreement)).join(" "));
  svg.replaceChildren(line);
  svg.setAttribute("title", pts.map((h) => "v" + h.version + ": " + Math.round(100 * h.agreement) + "%").join(", "));
}

function showStatus(s) {
  const m = $("model");
  if (!s.version) m.textContent = "no model yet";
  else {
    const agree = s.agreement === null ? "" : ", agrees " + Math.round(100 * s.agreement) + "% (last " + s.agreement_n + ")";
    m.textContent = "model " + s.version + " on " + s.trained_on + " judgements" + agree;
    m.title = "trained " + s.trained_at;
  }
  m.classList.toggle("training", !!s.training);
  sparkline(s.history || []);
  if (s.error) setBanner("The model could not be trained: " + s.error + " (judging goes on)");
  setProgress(s);
}

function listen() {
  const events = new EventSource(withToken("api/events"));
  events.onmessage = (e) => showStatus(JSON.parse(e.data));
}

function toggleHelp() { $("help").hidden = !$("help").hidden; }
const keys = {ArrowLeft: () => judge(">"), ArrowRight: () => judge("<"), "=": () => judge("="),
              s: skip, u: undo, "?": toggleHelp, Escape: () => { $("help").hidden = true; }};
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.repeat) return;
  const f = keys[e.key];
  if (f) { e.preventDefault(); f(); }
});
$("img-a").onclick = () => judge(">");
$("img-b").onclick = () => judge("<");
$("btn-left").onclick = () => judge(">");
$("btn-right").onclick = () => judge("<");
$("btn-tie").onclick = () => judge("=");
$("btn-skip").onclick = skip;
$("btn-undo").onclick = undo;
$("btn-help").onclick = toggleHelp;
$("btn-close-help").onclick = toggleHelp;
$("sorted-link").href = withToken("sorted");
act(next);
listen();
