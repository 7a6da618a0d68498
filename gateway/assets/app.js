// Vigía dashboard: KPIs, leaderboard, 24 h response-time chart and the notification center,
// live over the gateway's /ws. Plain browser JavaScript, no build step.
// Tokens stay out of the URLs the page shows or links to: a sign-in link carries the token in
// its fragment (/#token=<jwt>, never sent to a server), removed from the address bar at once;
// report links carry none (the report page uses this sign-in). Only /ws?token= remains, as the
// browser's WebSocket cannot send a header.
"use strict";

const TEXT = {
  es: {
    offline: "sin conexión", live: "en vivo", signout: "Salir", signin_title: "Entrar",
    signin_help: "Pegue su token (JWT). Localmente: vigia token --user 1001 --tenant 1 --role ceo",
    signin_button: "Entrar", k_conversations: "Conversaciones hoy", k_unanswered: "Sin respuesta ahora",
    k_rt_1h: "Respuesta 1 h (media / p90)", k_rt_today: "Respuesta hoy (media / p90)",
    k_leads: "Leads hoy / conversión", k_hot: "Leads calientes ahora", k_messages: "Mensajes última hora",
    leaderboard: "Clasificación de vendedores", seller: "Vendedor", score: "Productividad",
    activity: "Actividad", response: "Respuesta hoy (s)", unanswered: "Sin respuesta",
    conversion: "Conversión", chart: "Tiempo de respuesta, últimas 24 h (media móvil 1 h, s)",
    notifications: "Notificaciones", read_all: "Marcar todas como leídas", team: "Equipo",
    as_of: "Datos de", level_low: "baja", level_medium: "media", level_high: "alta",
    bad_token: "Token no válido", open_report: "Ver informe", no_notifications: "Sin notificaciones",
    token_in_query: "El token no va en la dirección (?token=): use un enlace /#token=… o péguelo aquí",
    p90_bound: "Datos antiguos: p90 más alto de un vendedor (el del equipo no es mayor)",
    about_seller: "Vendedor", about_agent: "Agente",
  },
  en: {
    offline: "offline", live: "live", signout: "Sign out", signin_title: "Sign in",
    signin_help: "Paste your token (JWT). Locally: vigia token --user 1001 --tenant 1 --role ceo",
    signin_button: "Sign in", k_conversations: "Conversations today", k_unanswered: "Unanswered now",
    k_rt_1h: "Response 1 h (mean / p90)", k_rt_today: "Response today (mean / p90)",
    k_leads: "Leads today / conversion", k_hot: "Hot leads now", k_messages: "Messages last hour",
    leaderboard: "Seller leaderboard", seller: "Seller", score: "Productivity",
    activity: "Activity", response: "Response today (s)", unanswered: "Unanswered",
    conversion: "Conversion", chart: "Response time, last 24 h (1 h rolling mean, s)",
    notifications: "Notifications", read_all: "Mark all read", team: "Team",
    as_of: "Figures as of", level_low: "low", level_medium: "medium", level_high: "high",
    bad_token: "Invalid token", open_report: "Open report", no_notifications: "No notifications",
    token_in_query: "A token does not go in the address (?token=): use a /#token=… link or paste it here",
    p90_bound: "Old figures: the highest seller p90 (the team's is not higher)",
    about_seller: "Seller", about_agent: "Agent",
  },
};

const state = {
  token: null, claims: null, lang: localStorage.getItem("vigia.lang") || "es",
  ws: null, lastSequence: null, notifications: new Map(), sellers: [], kpis: null,
  chart: null, updates: 0, retry: 0, series: null,
  // The people directory (GET /v1/people): user id -> name. Ids asked for since the last read.
  people: new Map(), peopleAsked: new Set(), peopleTimer: null, peopleSoon: null, peopleAt: 0,
};

const $ = (id) => document.getElementById(id);
const t = (key) => TEXT[state.lang][key] || key;
const wholeTenant = () => ["ceo", "manager"].includes(state.claims && state.claims.role);
const seesDirectory = () => ["ceo", "manager", "supervisor"].includes(state.claims && state.claims.role);

// A person as the page shows them: their name from the directory, else their id. Always set
// with textContent (names come from the CRM and may hold markup).
const personName = (id) => state.people.get(Number(id)) || `#${id}`;

// How often the directory is read again: the most a rename takes to show.
const PEOPLE_REFRESH_MS = 15000;

// Reads the people directory and, if a name changed, shows it everywhere.
async function loadPeople() {
  state.peopleAt = Date.now();
  const answer = await api("/v1/people");
  const next = new Map(answer.people.map((p) => [Number(p.user_id), p.name]));
  const changed = next.size !== state.people.size || [...next].some(([id, name]) => state.people.get(id) !== name);
  state.people = next;
  state.peopleAsked.clear();
  if (changed) {
    document.body.dataset.peopleVersion = String(Number(document.body.dataset.peopleVersion || 0) + 1);
    renderWho(); renderLeaderboard(); renderNotifications();
    if (state.series) renderChart(state.series);
  }
}

// Someone the page shows is not in the directory yet: read it again soon (once per id, at
// most every 5 s; the periodic read covers names that come later).
function askPeople(ids) {
  if (!seesDirectory() || !state.token) return;
  const fresh = ids.map(Number).filter((id) => !state.people.has(id) && !state.peopleAsked.has(id));
  if (fresh.length === 0 || state.peopleSoon) return;
  fresh.forEach((id) => state.peopleAsked.add(id));
  const wait = Math.max(300, state.peopleAt + 5000 - Date.now());
  state.peopleSoon = setTimeout(() => {
    state.peopleSoon = null;
    loadPeople().catch((e) => console.warn(e));
  }, wait);
}

function renderWho() {
  if (!state.claims) return;
  const c = state.claims;
  const name = state.people.get(c.sub);
  $("who").textContent = name ? `${name} · ${c.role} · tenant ${c.tenant_id}` : `${c.role} #${c.sub} · tenant ${c.tenant_id}`;
  $("who").title = name ? `#${c.sub}` : "";
}

function decodeClaims(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("not a JWT");
  const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
  return JSON.parse(decodeURIComponent(escape(json)));
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.token}`, ...(options.headers || {}) },
  });
  if (response.status === 401) { signOut(t("bad_token")); throw new Error("unauthorized"); }
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function applyLanguage() {
  document.documentElement.lang = state.lang;
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("lang").textContent = state.lang === "es" ? "EN" : "ES";
  renderLive(state.ws && state.ws.readyState === WebSocket.OPEN);
  renderWho(); renderKpis(); renderLeaderboard(); renderNotifications();
}

const fmtSeconds = (s) => (s === null || s === undefined) ? "—" : `${Math.round(s)} s`;
const fmtPct = (r) => (r === null || r === undefined) ? "—" : `${Math.round(r * 100)} %`;

function renderKpis() {
  let k = state.kpis;
  if (!wholeTenant()) {
    // A seller's own figures, from their leaderboard row.
    const me = state.sellers[0];
    if (!me) return;
    k = {
      conversations_today: me.conversations_today, unanswered_now: me.conversations_unanswered,
      response_1h: me.response_1h, response_today: me.response_today,
      leads_today: me.leads_generated_today,
      conversion_rate_today: me.leads_generated_today > 0 ? me.leads_converted_today / me.leads_generated_today : null,
      hot_leads_now: me.hot_leads,
      messages_last_hour: me.messages_last_hour, as_of: me.snapshot_at,
    };
  }
  if (!k) return;
  $("k-conversations").textContent = k.conversations_today;
  $("k-unanswered").textContent = k.unanswered_now;
  renderResponse($("k-rt-1h"), k.response_1h);
  renderResponse($("k-rt-today"), k.response_today);
  $("k-leads").textContent = `${k.leads_today} / ${fmtPct(k.conversion_rate_today)}`;
  $("k-hot").textContent = k.hot_leads_now;
  $("k-messages").textContent = k.messages_last_hour;
  $("as-of").textContent = k.as_of ? `${t("as_of")} ${new Date(k.as_of).toLocaleString(state.lang)}` : "";
}

// "mean / p90": the team's for a CEO or manager (of all its sellers' samples together), a
// seller's own for a seller. Tenant figures from old snapshots (source "sellers") show the
// highest seller p90 instead, marked with "≤" and explained in the tooltip.
function renderResponse(el, r) {
  const bound = r.source === "sellers" && r.p90_seconds !== null && r.p90_seconds !== undefined;
  el.textContent = `${fmtSeconds(r.mean_seconds)} / ${bound ? "≤ " : ""}${fmtSeconds(r.p90_seconds)}`;
  el.title = bound ? t("p90_bound") : "";
}

function renderLeaderboard() {
  const body = document.querySelector("#leaderboard tbody");
  const before = new Map([...body.querySelectorAll("tr")].map((tr, i) => [tr.dataset.seller, i]));
  body.replaceChildren(...state.sellers.map((s, i) => {
    const tr = document.createElement("tr");
    tr.dataset.seller = String(s.seller_id);
    if (before.has(tr.dataset.seller) && before.get(tr.dataset.seller) !== i) tr.className = "moved";
    const cells = [
      s.position || i + 1, personName(s.seller_id), s.productivity_score.toFixed(1),
      t(`level_${s.activity_level}`), fmtSeconds(s.response_today.mean_seconds),
      s.conversations_unanswered, fmtPct(s.conversion_rate),
    ];
    cells.forEach((value, j) => {
      const td = document.createElement("td");
      td.textContent = value;
      if (j === 1) { td.className = "person"; td.title = `#${s.seller_id}`; }
      if (j === 3) td.className = `level-${s.activity_level}`;
      tr.appendChild(td);
    });
    return tr;
  }));
  askPeople(state.sellers.map((s) => s.seller_id));
}

// The person a notification is about (a seller's conversation or lead, a call-center agent),
// unless it is the reader.
function aboutWhom(n) {
  const d = n.data || {};
  if (d.seller_id !== undefined && d.seller_id !== null) return ["about_seller", d.seller_id];
  if (d.agent_id !== undefined && d.agent_id !== null) return ["about_agent", d.agent_id];
  return null;
}

function renderNotifications() {
  const list = $("notifications");
  const items = [...state.notifications.values()].sort((a, b) => b.sequence - a.sequence).slice(0, 50);
  if (items.length === 0) {
    const li = document.createElement("li");
    li.className = "muted"; li.textContent = t("no_notifications");
    list.replaceChildren(li);
    return;
  }
  list.replaceChildren(...items.map((item) => {
    const n = item.notification;
    const li = document.createElement("li");
    li.dataset.id = n.id;
    li.className = [item.read ? "read" : "unread", item.withdrawn ? "withdrawn" : ""].join(" ");
    const title = document.createElement("div");
    title.className = `prio-${n.priority}`;
    title.textContent = n.title;
    const msg = document.createElement("div");
    msg.className = "msg";
    msg.textContent = `${n.message} · ${new Date(n.created_at).toLocaleString(state.lang)}`;
    li.append(title, msg);
    const about = aboutWhom(n);
    if (about && Number(about[1]) !== state.claims.sub) {
      const who = document.createElement("div");
      who.className = "who";
      who.dataset.user = String(about[1]);
      who.textContent = `${t(about[0])}: ${personName(about[1])}`;
      li.appendChild(who);
    }
    if (n.type === "daily_report" && n.data && n.data.day) {
      const a = document.createElement("a");
      a.href = `/reports/${encodeURIComponent(n.data.day)}?lang=${state.lang}`;
      a.target = "_blank"; a.textContent = t("open_report");
      li.appendChild(a);
    }
    li.addEventListener("click", () => markRead(n.id));
    return li;
  }));
  askPeople(items.map((item) => aboutWhom(item.notification)).filter(Boolean).map((a) => a[1]));
}

function setUnread(count) {
  $("unread").textContent = String(count);
  document.title = count > 0 ? `(${count}) Vigía` : "Vigía";
}

function renderLive(on) {
  $("live").className = `live ${on ? "on" : "off"}`;
  $("live").textContent = on ? t("live") : t("offline");
}

function renderChart(series) {
  const el = $("chart");
  if (!series.buckets.length || typeof uPlot === "undefined") { el.textContent = "—"; return; }
  state.series = series;
  const sellers = Object.keys(series.sellers);
  const data = [series.buckets, series.team, ...sellers.map((s) => series.sellers[s])];
  const palette = ["#0b6bcb", "#e67e22", "#2e7d32", "#8e44ad", "#c62828", "#16a085", "#7f8c8d"];
  const opts = {
    width: Math.max(320, el.clientWidth || 900), height: 260,
    series: [
      {},
      { label: t("team"), stroke: "#1d2430", width: 3, spanGaps: true, points: { show: true, size: 7 } },
      ...sellers.map((s, i) => ({ label: personName(s), stroke: palette[i % palette.length], width: 1.5, spanGaps: true, points: { show: true, size: 5 } })),
    ],
    axes: [{}, { label: "s" }],
  };
  if (state.chart) state.chart.destroy();
  el.replaceChildren();
  state.chart = new uPlot(opts, data, el);
}

async function loadMetrics() {
  const [sellers, series] = await Promise.all([
    api("/v1/metrics/sellers?window=today"), api("/v1/metrics/series"),
  ]);
  state.sellers = sellers.sellers;
  if (wholeTenant()) state.kpis = await api("/v1/metrics/tenant");
  renderKpis(); renderLeaderboard(); renderChart(series);
}

async function loadInbox() {
  const [page, count] = await Promise.all([
    api("/v1/notifications?limit=50"), api("/v1/notifications/count"),
  ]);
  for (const item of page.notifications) state.notifications.set(item.notification.id, item);
  const newest = page.notifications[0];
  if (newest) state.lastSequence = Math.max(state.lastSequence || 0, newest.sequence);
  renderNotifications(); setUnread(count.count);
}

async function markRead(id) {
  const item = state.notifications.get(id);
  if (item) { item.read = true; renderNotifications(); }
  const answer = await api(`/v1/notifications/${id}/read`, { method: "POST" });
  setUnread(answer.count);
}

async function markAllRead() {
  for (const item of state.notifications.values()) item.read = true;
  renderNotifications();
  const answer = await api("/v1/notifications/read-all", { method: "POST" });
  setUnread(answer.count);
}

let seriesTimer = null;
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const since = state.lastSequence !== null ? `&since=${state.lastSequence}` : "";
  const ws = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(state.token)}${since}`);
  state.ws = ws;
  ws.onopen = () => { state.retry = 0; renderLive(true); };
  ws.onclose = (event) => {
    renderLive(false);
    if (state.ws !== ws || !state.token) return;
    if (event.code === 4001) { signOut(t("bad_token")); return; }
    state.retry = Math.min(state.retry + 1, 6);
    setTimeout(connect, 500 * 2 ** state.retry);
  };
  ws.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    switch (frame.type) {
      case "ping": ws.send(JSON.stringify({ type: "pong" })); break;
      case "unread_count": setUnread(frame.count); break;
      case "notification": {
        const item = { sequence: frame.sequence, read: frame.read, withdrawn: frame.withdrawn, notification: frame.notification };
        state.lastSequence = Math.max(state.lastSequence || 0, frame.sequence);
        const withdrawn = frame.notification.withdraws && state.notifications.get(frame.notification.withdraws);
        if (withdrawn) { withdrawn.withdrawn = true; withdrawn.read = true; }
        state.notifications.set(frame.notification.id, item);
        renderNotifications();
        break;
      }
      case "metrics": {
        if (frame.tenant) state.kpis = frame.tenant;
        if (frame.sellers) state.sellers = wholeTenant() ? frame.sellers : frame.sellers.filter((s) => s.seller_id === state.claims.sub);
        state.updates += 1;
        document.body.dataset.metricsUpdates = String(state.updates);
        renderKpis(); renderLeaderboard();
        // The chart moves by quarter hours: refresh it at most every 30 s (soon if empty).
        if (!seriesTimer) seriesTimer = setTimeout(async () => {
          seriesTimer = null;
          try { renderChart(await api("/v1/metrics/series")); } catch (e) { console.warn(e); }
        }, state.chart ? 30000 : 1000);
        break;
      }
      default: break;
    }
  };
}

async function start(token) {
  try {
    state.claims = decodeClaims(token);
    state.claims.sub = Number(state.claims.sub);
  } catch (e) {
    signOut(t("bad_token"));
    return;
  }
  state.token = token;
  localStorage.setItem("vigia.token", token);
  renderWho();
  $("signin").hidden = true;
  $("app").hidden = false;
  document.body.dataset.role = state.claims.role;
  try {
    // Names are a nicety: without them the page shows ids, and reads them again later.
    clearInterval(state.peopleTimer);
    state.peopleTimer = setInterval(() => { loadPeople().catch((e) => console.warn(e)); }, PEOPLE_REFRESH_MS);
    await Promise.all([loadPeople().catch((e) => console.warn(e)), loadMetrics(), loadInbox()]);
  } catch (e) {
    console.warn(e);
    if (!state.token) return;
  }
  connect();
}

function signOut(message) {
  state.token = null;
  clearInterval(state.peopleTimer); clearTimeout(state.peopleSoon);
  state.peopleTimer = null; state.peopleSoon = null;
  state.people = new Map(); state.peopleAsked.clear();
  localStorage.removeItem("vigia.token");
  if (state.ws) state.ws.close();
  state.ws = null;
  $("app").hidden = true;
  $("center").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("lang").addEventListener("click", () => {
    state.lang = state.lang === "es" ? "en" : "es";
    localStorage.setItem("vigia.lang", state.lang);
    applyLanguage();
  });
  $("bell").addEventListener("click", () => { $("center").hidden = !$("center").hidden; });
  $("read-all").addEventListener("click", markAllRead);
  $("signout").addEventListener("click", () => signOut());
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    start($("token").value.trim());
  });
  applyLanguage();
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
  const inQuery = new URLSearchParams(location.search).has("token");
  if (fromFragment || inQuery) history.replaceState(null, "", "/");
  // A token in the query has already reached the server's and proxies' logs: it is not used,
  // so that such links stop being made.
  const token = fromFragment || localStorage.getItem("vigia.token");
  if (token) start(token); else signOut(inQuery ? t("token_in_query") : undefined);
  // A sign-in link opened in a tab already showing the dashboard changes only the fragment (no
  // page load): sign in with its token from a fresh page, so nothing of the previous user stays.
  window.addEventListener("hashchange", () => {
    const next = new URLSearchParams(location.hash.slice(1)).get("token");
    if (!next) return;
    localStorage.setItem("vigia.token", next);
    history.replaceState(null, "", "/");
    location.reload();
  });
});
