// flinkrec live page: pick a user, see their top 10, rate movies or mark one "not interested" (a hide event: the
// job never recommends it to the user again); the list refreshes every second.
// Plain JS, no dependencies. Every value from the API is put into the page with textContent.
"use strict";

const POLL_MS = 1000;
const USERS_MS = 10000;
const HEALTH_MS = 5000;
const TOP_N = 10;

const state = {
  userId: null,
  signature: null,      // what the shown list looks like, to notice a change
  shownIds: [],         // item ids in the shown order, to flash new or moved rows
  fetchedAt: 0,         // performance.now() of the last answer
  ageAtFetch: null,     // its age_ms
  inflight: false,
  pending: null,        // {eventId, title, sentAt, verb} of the last rating or hide, until the list reflects it
  ratings: new Map(),   // `${user}\u0000${item}` -> stars given in this session
};

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function uuid() {
  if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = new Uint8Array(16);
  (window.crypto || {}).getRandomValues ? crypto.getRandomValues(b) : b.forEach((_, i) => { b[i] = Math.random() * 256; });
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function api(path, options) {
  const resp = await fetch(path, Object.assign({ headers: { Accept: "application/json" }, cache: "no-store" }, options));
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  return { status: resp.status, ok: resp.ok, body };
}

function fmtAge(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms ago`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s ago`;
  if (ms < 3600000) return `${Math.round(ms / 60000)} min ago`;
  if (ms < 86400000) return `${Math.round(ms / 3600000)} h ago`;
  return `${Math.round(ms / 86400000)} d ago`;
}

function toast(message, kind = "info", ms = 3500) {
  const t = el("div", `toast toast-${kind}`, message);
  $("toasts").append(t);
  setTimeout(() => t.classList.add("leaving"), ms);
  setTimeout(() => t.remove(), ms + 400);
}

// --- stars -------------------------------------------------------------------------------------------------------

function stars(itemId, title) {
  const box = el("div", "stars");
  box.setAttribute("role", "group");
  box.setAttribute("aria-label", `rate ${title || itemId}`);
  const given = state.userId ? state.ratings.get(`${state.userId}\u0000${itemId}`) || 0 : 0;
  const paint = (n) => box.querySelectorAll("button").forEach((b, i) => b.classList.toggle("on", i < n));
  for (let s = 1; s <= 5; s++) {
    const b = el("button", "star", "★");
    b.type = "button";
    b.title = `${s} star${s > 1 ? "s" : ""}`;
    b.dataset.stars = String(s);
    b.setAttribute("aria-label", `${s} star${s > 1 ? "s" : ""}`);
    b.addEventListener("mouseenter", () => paint(s));
    b.addEventListener("focus", () => paint(s));
    b.addEventListener("click", () => rate(itemId, title, s, box));
    box.append(b);
  }
  box.addEventListener("mouseleave", () => paint(Number(box.dataset.given || 0)));
  box.dataset.given = String(given);
  paint(given);
  if (!state.userId) box.classList.add("disabled");
  return box;
}

async function postEvent(event) {
  return api("/events", { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
                          body: JSON.stringify(event) });
}

async function rate(itemId, title, value, box) {
  if (!state.userId) { toast("Pick a user first", "warn"); return; }
  const event = { event_id: `web-${uuid()}`, user_id: state.userId, item_id: itemId, type: "rate", value, ts: Date.now() };
  box.classList.add("sending");
  try {
    const r = await postEvent(event);
    if (r.status === 202) {
      state.ratings.set(`${state.userId}\u0000${itemId}`, value);
      box.dataset.given = String(value);
      box.querySelectorAll("button").forEach((b, i) => b.classList.toggle("on", i < value));
      state.pending = { eventId: event.event_id, title: title || itemId, sentAt: performance.now(), verb: "rating of" };
      toast(`Rated “${title || itemId}” ${"★".repeat(value)}${"☆".repeat(5 - value)} — waiting for the job…`);
    } else {
      const why = r.body && (r.body.rejected && r.body.rejected.length ? r.body.rejected[0].error : r.body.error);
      toast(`Rating not sent (${r.status}): ${why || "unknown error"}`, "error", 6000);
    }
  } catch (err) {
    toast(`Rating not sent: ${err}`, "error", 6000);
  } finally {
    box.classList.remove("sending");
  }
}

// "not interested": a hide event; the job leaves the item out of this user's lists from its next window on
async function hide(itemId, title, button, row) {
  if (!state.userId) { toast("Pick a user first", "warn"); return; }
  const event = { event_id: `web-${uuid()}`, user_id: state.userId, item_id: itemId, type: "hide", ts: Date.now() };
  button.disabled = true;
  try {
    const r = await postEvent(event);
    if (r.status === 202) {
      row.classList.add("dismissed");
      state.pending = { eventId: event.event_id, title: title || itemId, sentAt: performance.now(), verb: "hiding" };
      toast(`“${title || itemId}” hidden — waiting for the job…`);
      setTimeout(refresh, 250);
    } else {
      button.disabled = false;
      const why = r.body && (r.body.rejected && r.body.rejected.length ? r.body.rejected[0].error : r.body.error);
      toast(`Not sent (${r.status}): ${why || "unknown error"}`, "error", 6000);
    }
  } catch (err) {
    button.disabled = false;
    toast(`Not sent: ${err}`, "error", 6000);
  }
}

// --- the list ----------------------------------------------------------------------------------------------------

function signatureOf(data) {
  return JSON.stringify([data.cold_start, data.processed_at, data.items.map((i) => [i.item_id, i.score])]);
}

function renderRecs(data) {
  const list = $("recs");
  const before = new Map(state.shownIds.map((id, i) => [id, i]));
  const first = state.shownIds.length === 0;
  const maxScore = Math.max(1e-9, ...data.items.map((i) => Math.abs(i.score || 0)));
  list.replaceChildren();
  data.items.forEach((it, i) => {
    const li = el("li", "rec");
    li.dataset.itemId = it.item_id;
    if (!first && (!before.has(it.item_id) || before.get(it.item_id) !== i)) {
      li.classList.add(before.has(it.item_id) ? "moved" : "new");
    }
    li.append(el("div", "rank", it.rank));
    const body = el("div", "body");
    const head = el("div", "title-row");
    head.append(el("span", "title", it.title || `item ${it.item_id}`));
    if (it.year) head.append(el("span", "year", it.year));
    if (!before.has(it.item_id) && !first) head.append(el("span", "badge", "new"));
    body.append(head);
    const sub = el("div", "sub");
    for (const g of it.genres || []) sub.append(el("span", "genre", g));
    if (it.reason) sub.append(el("span", "reason", it.reason));
    body.append(sub);
    li.append(body);
    const score = el("div", "score");
    const bar = el("div", "bar");
    const fill = el("div", "fill");
    fill.style.width = `${Math.max(4, Math.round((100 * Math.abs(it.score || 0)) / maxScore))}%`;
    bar.append(fill);
    score.append(bar, el("span", "num", it.score === null ? "–" : Number(it.score).toFixed(3)));
    li.append(score);
    const actions = el("div", "actions");
    actions.append(stars(it.item_id, it.title));
    const no = el("button", "not-interested", "not interested");
    no.type = "button";
    no.title = "never recommend this to me again (sends a hide event)";
    no.setAttribute("aria-label", `not interested in ${it.title || it.item_id}`);
    no.addEventListener("click", () => hide(it.item_id, it.title, no, li));
    actions.append(no);
    li.append(actions);
    list.append(li);
  });
  state.shownIds = data.items.map((i) => i.item_id);
  $("empty").hidden = data.items.length > 0;
  if (!data.items.length) $("empty").textContent = "The list is empty.";
}

function renderMeta() {
  const meta = $("recs-meta");
  if (!state.last) { meta.textContent = ""; return; }
  const d = state.last;
  const parts = [];
  if (d.cold_start) parts.push("trending items (cold start)");
  else {
    const age = state.ageAtFetch === null ? null : state.ageAtFetch + (performance.now() - state.fetchedAt);
    parts.push(`updated ${fmtAge(age)}`);
    if (d.history_size !== null) parts.push(`${d.history_size} item${d.history_size === 1 ? "" : "s"} in history`);
    if (d.event_id) parts.push(`last event ${d.event_id}`);
    if (d.mode) parts.push(`${d.mode} fusion`);
    if (d.arm) parts.push(`arm ${d.arm}`);
    if (d.trigger === "final") parts.push("final re-rank");
  }
  meta.textContent = parts.join(" · ");
}

async function refresh() {
  if (!state.userId || state.inflight) return;
  const user = state.userId;
  state.inflight = true;
  try {
    const r = await api(`/users/${encodeURIComponent(user)}/recommendations?n=${TOP_N}&cold_start=true`);
    if (user !== state.userId) return;  // switched meanwhile
    const banner = $("banner");
    if (r.status === 200) {
      const data = r.body;
      state.fetchedAt = performance.now();
      state.ageAtFetch = data.age_ms;
      state.last = data;
      banner.hidden = !data.cold_start;
      if (data.cold_start) banner.textContent = `No recommendations for user ${user} yet — showing trending items. Rate a few movies to get personal picks.`;
      const sig = signatureOf(data);
      if (sig !== state.signature) {
        state.signature = sig;
        renderRecs(data);
      }
      if (state.pending && !data.cold_start && data.event_id === state.pending.eventId) {
        const ms = Math.round(performance.now() - state.pending.sentAt);
        toast(`Recommendations updated from your ${state.pending.verb} “${state.pending.title}” in ${ms} ms`, "ok");
        state.pending = null;
      }
    } else if (r.status === 404) {
      state.last = null;
      state.signature = null;
      state.shownIds = [];
      $("recs").replaceChildren();
      banner.hidden = true;
      $("empty").hidden = false;
      $("empty").textContent = (r.body && r.body.error) || `No recommendations for user ${user}.`;
    } else {
      banner.hidden = false;
      banner.textContent = `The API answered ${r.status}: ${(r.body && r.body.error) || "error"}`;
    }
  } catch (err) {
    $("banner").hidden = false;
    $("banner").textContent = `Cannot reach the API: ${err}`;
  } finally {
    state.inflight = false;
    renderMeta();
  }
}

function selectUser(id) {
  id = (id || "").trim();
  if (!id) return;
  state.userId = id;
  state.signature = null;
  state.shownIds = [];
  state.last = null;
  state.pending = null;
  $("user-input").value = id;
  $("recs-title").textContent = `Top ${TOP_N} for user ${id}`;
  $("recs").replaceChildren();
  $("empty").hidden = false;
  $("empty").textContent = "loading…";
  document.querySelectorAll("#recent-users .chip").forEach((c) => c.classList.toggle("active", c.dataset.user === id));
  history.replaceState(null, "", `#user=${encodeURIComponent(id)}`);
  document.querySelectorAll("#search-results .stars").forEach((s) => s.classList.remove("disabled"));
  refresh();
}

// --- users, search, health -----------------------------------------------------------------------------------------

async function loadUsers() {
  try {
    const r = await api("/users?limit=24");
    if (!r.ok) return;
    const chips = $("recent-users");
    const list = $("user-list");
    chips.replaceChildren();
    list.replaceChildren();
    if (!r.body.users.length) chips.append(el("span", "muted", "none yet: is the job running?"));
    for (const u of r.body.users) {
      const c = el("button", "chip", u.user_id);
      c.type = "button";
      c.dataset.user = u.user_id;
      c.title = `updated ${fmtAge(u.age_ms)}`;
      c.classList.toggle("active", u.user_id === state.userId);
      c.addEventListener("click", () => selectUser(u.user_id));
      chips.append(c);
      const o = document.createElement("option");
      o.value = u.user_id;
      list.append(o);
    }
    if (r.body.total > r.body.users.length) chips.append(el("span", "muted", `+${r.body.total - r.body.users.length} more`));
  } catch (_) { /* the health pill tells */ }
}

let searchTimer = null;
let searchSeq = 0;
async function search(q) {
  const seq = ++searchSeq;
  const ul = $("search-results");
  if (!q.trim()) { ul.replaceChildren(); return; }
  const r = await api(`/items?q=${encodeURIComponent(q.trim())}&limit=8`);
  if (seq !== searchSeq) return;
  ul.replaceChildren();
  if (!r.ok) { ul.append(el("li", "muted", (r.body && r.body.error) || `error ${r.status}`)); return; }
  if (!r.body.items.length) { ul.append(el("li", "muted", `no title contains “${q.trim()}”`)); return; }
  for (const it of r.body.items) {
    const li = el("li", "result");
    li.dataset.itemId = it.item_id;
    const text = el("div", "result-text");
    const t = el("div", "title", it.title || `item ${it.item_id}`);
    if (it.year) t.append(el("span", "year", it.year));
    text.append(t, el("div", "genres-line", (it.genres || []).join(" · ")));
    li.append(text, stars(it.item_id, it.title));
    ul.append(li);
  }
  if (r.body.total > r.body.items.length) ul.append(el("li", "muted", `${r.body.total - r.body.items.length} more: type more of the title`));
}

async function health() {
  const pill = $("health");
  try {
    const r = await api("/healthz");
    const c = (r.body && r.body.checks) || {};
    const job = c.job || {};
    let text; let cls;
    if (r.status === 200) {
      text = `job live · last update ${fmtAge(job.age_ms)}`; cls = "pill-ok";
    } else if (c.redis && !c.redis.ok) {
      text = "Redis unavailable"; cls = "pill-bad";
    } else if (c.kafka && !c.kafka.ok) {
      text = "Kafka unavailable"; cls = "pill-bad";
    } else {
      text = job.age_ms !== undefined ? `job idle · last update ${fmtAge(job.age_ms)}` : "no results yet"; cls = "pill-warn";
    }
    pill.textContent = text;
    pill.className = `pill ${cls}`;
    pill.title = JSON.stringify(c, null, 1);
  } catch (err) {
    pill.textContent = "API unreachable";
    pill.className = "pill pill-bad";
  }
}

// --- wiring --------------------------------------------------------------------------------------------------------

$("user-form").addEventListener("submit", (e) => { e.preventDefault(); selectUser($("user-input").value); });
$("search-input").addEventListener("input", (e) => {
  clearTimeout(searchTimer);
  const q = e.target.value;
  searchTimer = setTimeout(() => search(q), 200);
});
$("live").addEventListener("change", (e) => document.body.classList.toggle("paused", !e.target.checked));

// the running experiment's arms (GET /experiments): the panel shows only while there are some
async function loadArms() {
  const r = await api("/experiments").catch(() => null);
  const arms = r && r.ok && r.body ? r.body.arms : [];
  $("experiment-panel").hidden = !arms.length;
  if (!arms.length) return;
  $("experiment-title").textContent = `Experiment ${arms[arms.length - 1].experiment}`;
  const fmt = (x) => (x === null ? "–" : x.toFixed(4));
  const body = $("arms").querySelector("tbody");
  body.replaceChildren(...arms.map((a) => {
    const tr = el("tr");
    for (const v of [a.arm, a.events.toLocaleString(), fmt(a.hit_rate), fmt(a.ndcg), a.lists.toLocaleString()]) {
      tr.append(el("td", null, v));
    }
    return tr;
  }));
}

setInterval(() => { if ($("live").checked) refresh(); }, POLL_MS);
setInterval(loadArms, USERS_MS);
setInterval(renderMeta, 250);
setInterval(loadUsers, USERS_MS);
setInterval(health, HEALTH_MS);

const fromHash = new URLSearchParams(location.hash.slice(1)).get("user");
loadUsers();
loadArms();
health();
if (fromHash) selectUser(fromHash);
