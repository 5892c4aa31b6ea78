// The Semantest dashboard: plain JS, no build step. Reads (with the admin key as a Bearer
// token) /dashboard/api/summary and /api/v1/fleet every few seconds, and follows the jobs on
// the page live over the WebSocket /api/v1/ws. See controller/dashboard.py.
"use strict";

const KEY = "semantest.adminKey";
const FINAL = new Set(["succeeded", "failed", "canceled"]);
const POLL_MS = 1000 * Number(document.body.dataset.pollS || 2);
const $ = (sel) => document.querySelector(sel);

const state = { jobs: new Map(), thumbs: new Map(), subscribed: new Set(), socket: null, timer: null };

function key() { return sessionStorage.getItem(KEY); }

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${key()}`, ...(options.headers || {}) };
  const reply = await fetch(path, { ...options, headers });
  if (reply.status === 401 || reply.status === 403) {
    signOut("The key was refused: " + ((await reply.json()).error || {}).message);
    throw new Error("refused");
  }
  return reply;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function badge(text, kind) { return el("span", { class: `badge ${kind || text}`, text }); }

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

// -- sign in / out -------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const candidate = $("#key").value.trim();
  const reply = await fetch("/dashboard/api/summary", { headers: { Authorization: `Bearer ${candidate}` } });
  if (!reply.ok) {
    const body = await reply.json().catch(() => ({}));
    $("#login-error").textContent = (body.error && body.error.message) || `HTTP ${reply.status}`;
    return;
  }
  sessionStorage.setItem(KEY, candidate);
  $("#key").value = "";
  start();
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  clearInterval(state.timer);
  if (state.socket) state.socket.close();
  state.socket = null;
  $("#main").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

function start() {
  $("#login").hidden = true;
  $("#main").hidden = false;
  $("#logout").hidden = false;
  refresh();
  state.timer = setInterval(refresh, POLL_MS);
  connect();
}

// -- reads ---------------------------------------------------------------------------------

async function refresh() {
  try {
    const [summary, fleet] = await Promise.all([
      api("/dashboard/api/summary").then((r) => r.json()),
      api("/api/v1/fleet").then((r) => r.json()),
    ]);
    renderLanes(summary.lanes);
    renderProviders(summary.providers);
    renderFleet(fleet.agents || []);
    for (const job of summary.jobs) state.jobs.set(job.id, { ...state.jobs.get(job.id), ...job });
    renderJobs();
    $("#updated").textContent = "updated " + new Date(summary.at * 1000).toLocaleTimeString();
  } catch (err) {
    if (err.message !== "refused") $("#updated").textContent = "update failed: " + err.message;
  }
}

function renderLanes(lanes) {
  fill($("#lanes tbody"), lanes.map((l) => el("tr", { "data-lane": `${l.provider}.${l.lane}` },
    el("td", { text: l.provider }), el("td", { text: l.lane }),
    el("td", { class: "depth", text: String(l.depth) }))));
}

function renderProviders(providers) {
  fill($("#providers tbody"), providers.map((p) => {
    const parked = el("td");
    parked.append(String(p.slots.parked || 0));
    for (const s of p.parked) parked.append(" ", badge(`${s.slot}: ${s.reason}`, "parked"));
    return el("tr", { "data-provider": p.provider },
      el("td", { text: p.provider }), el("td", {}, badge(p.health)),
      el("td", { text: String(p.agents) }), el("td", { text: String(p.slots.busy || 0) }),
      el("td", { text: String(p.slots.idle || 0) }), parked,
      el("td", { text: `${p.recentFailed} of ${p.recentFinished}` }));
  }));
}

function renderFleet(agents) {
  fill($("#fleet tbody"), agents.map((a) => {
    const slots = el("td");
    for (const s of a.slots || []) {
      const why = s.state === "parked" ? ` (${s.parkedReason || "?"})` : "";
      const job = s.jobId ? ` ${s.jobId.slice(0, 8)}` : "";
      slots.append(el("span", { class: `slot badge ${s.state}`, "data-slot": s.name, title: s.account, text: `${s.index}: ${s.state}${why}${job}` }));
    }
    const mb = a.pssBytes ? `${Math.round(a.pssBytes / 2 ** 20)} MB` : "";
    const cold = a.readyAfterS ? `${a.readyAfterS.toFixed(2)} s` : "";
    return el("tr", { "data-agent": a.id }, el("td", { class: "mono", text: a.id }),
      el("td", {}, badge(a.state)), slots, el("td", { text: String(a.jobsDone || 0) }),
      el("td", { text: mb }), el("td", { text: cold }));
  }));
}

function renderJobs() {
  const jobs = [...state.jobs.values()].sort((a, b) => b.createdAt - a.createdAt).slice(0, 50);
  fill($("#jobs tbody"), jobs.map(jobRow));
  for (const job of jobs) if (!FINAL.has(job.status)) subscribe(job);
}

function jobRow(job) {
  const thumb = el("td");
  const image = (job.images || [])[0];
  if (image) thumb.append(thumbnail(image));
  else thumb.append(el("div", { class: "thumb-empty" }));
  const error = el("td", { class: "error" });
  if (job.error) error.append(`${job.error.code}: ${job.error.message}`);
  for (const [name, url] of Object.entries(job.evidence || {})) {
    const link = el("button", { class: "link", type: "button", text: name });
    link.addEventListener("click", () => openEvidence(url));
    error.append(" ", link);
  }
  const fillBar = el("div");
  fillBar.style.width = `${job.progress || 0}%`; // CSSOM: the page's policy allows no inline style
  const bar = el("div", { class: "bar" }, fillBar);
  return el("tr", { "data-job-id": job.id, "data-status": job.status },
    thumb, el("td", { class: "mono", title: job.id, text: job.id.slice(0, 12) }),
    el("td", { text: job.tenant }), el("td", { text: job.provider }), el("td", { text: job.lane }),
    el("td", {}, badge(job.status)), el("td", { title: job.stage }, bar),
    el("td", { class: "prompt", title: job.prompt, text: job.prompt }), error);
}

function thumbnail(image) {
  const img = el("img", { class: "thumb", alt: image.key, "data-key": image.key, "data-loaded": "false" });
  let loading = state.thumbs.get(image.key);
  if (!loading) {
    loading = api(image.url).then((r) => {
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return r.blob();
    }).then((blob) => URL.createObjectURL(blob));
    state.thumbs.set(image.key, loading);
    loading.catch(() => state.thumbs.delete(image.key));
  }
  loading.then((src) => {
    img.addEventListener("load", () => img.setAttribute("data-loaded", "true"), { once: true });
    img.src = src;
  }).catch(() => img.setAttribute("data-loaded", "error"));
  return img;
}

async function openEvidence(url) {
  const reply = await api(url);
  if (!reply.ok) return alert(`evidence: HTTP ${reply.status}`);
  window.open(URL.createObjectURL(await reply.blob()), "_blank");
}

// -- live ------------------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/v1/ws`);
  state.socket = socket;
  state.subscribed.clear();
  socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "auth", key: key() })));
  socket.addEventListener("message", (message) => onMessage(JSON.parse(message.data)));
  socket.addEventListener("close", () => {
    $("#live").textContent = "offline";
    $("#live").className = "badge";
    if (state.socket === socket && key()) setTimeout(connect, 2000); // a new socket resubscribes
  });
}

function subscribe(job) {
  const socket = state.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN || state.subscribed.has(job.id)) return;
  state.subscribed.add(job.id);
  socket.send(JSON.stringify({ type: "subscribe", jobId: job.id }));
}

function onMessage(msg) {
  if (msg.type === "ping" || msg.type === "pong") return; // the server's keepalive
  if (msg.type === "ready" || msg.type === "subscribed") {
    $("#live").textContent = "live";
    $("#live").className = "badge live";
    if (msg.type !== "subscribed") renderJobs();
    return;
  }
  if (msg.type === "event") {
    const job = state.jobs.get(msg.jobId);
    if (!job) return;
    const event = msg.event;
    Object.assign(job, { status: event.status, progress: event.progress, stage: event.stage });
    renderJobs();
    if (FINAL.has(event.status)) refresh(); // the summary brings its images and error
  } else if (msg.type === "end") {
    state.subscribed.delete(msg.jobId);
    refresh();
  }
}

// -- submit ----------------------------------------------------------------------------------

async function submitPrompt(event) {
  event.preventDefault();
  const prompt = $("#prompt").value.trim();
  const reply = await api("/api/v1/images/generate", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt, priority: $("#lane").value }),
  });
  const body = await reply.json();
  if (!reply.ok) {
    $("#submitted").textContent = `refused: ${body.error.code}: ${body.error.message}`;
    return;
  }
  $("#submitted").replaceChildren("submitted ", el("code", { id: "submitted-id", text: body.jobId }));
  state.jobs.set(body.jobId, {
    id: body.jobId, tenant: "admin", provider: "sandbox", lane: $("#lane").value, prompt,
    status: "queued", progress: 0, stage: "queued", createdAt: Date.now() / 1000, images: [],
  });
  renderJobs();
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", signIn);
  $("#submit-form").addEventListener("submit", submitPrompt);
  $("#logout").addEventListener("click", () => signOut());
  if (key()) start(); else signOut();
});
