// zray dashboard: helpers shared by the pages (no framework, no build step).
"use strict";

const Z = { pages: {}, timer: null, current: null };

Z.esc = (value) => String(value ?? "").replace(/[&<>"']/g,
  (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

Z.api = async function (path) {
  const response = await fetch(path, { credentials: "same-origin",
                                       headers: { Accept: "application/json" } });
  if (response.status === 401) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new Error("this dashboard asks for its token");
  }
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
};

Z.query = (name) => new URLSearchParams(location.search).get(name);

Z.setQuery = function (params) {
  const search = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined || v === "") search.delete(k); else search.set(k, v);
  }
  const text = search.toString();
  history.replaceState(null, "", location.pathname + (text ? "?" + text : ""));
};

// --- formatting ----------------------------------------------------------------------

Z.short = (id, n = 12) => id ? `<span class="id" title="${Z.esc(id)}">${Z.esc(id.slice(0, n))}</span>` : "—";
// task and actor ids start with their job's bytes and end with a counter: show both ends
Z.tid = (id) => id ? `<span class="id" title="${Z.esc(id)}">${Z.esc(id.length > 16 ? id.slice(0, 8) + "…" + id.slice(-6) : id)}</span>` : "—";

Z.bytes = function (n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(n < 10 ? 2 : 1) : n} ${units[i]}`;
};

Z.duration = function (ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1) return "<1 ms";
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.round(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
};

Z.clock = function (ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit",
                                    hour12: false });
};

Z.ago = function (ms) {
  if (!ms) return "—";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
};

Z.num = (v) => (v === null || v === undefined) ? "—" :
  (Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1).replace(/\.?0+$/, ""));

const STATE_KIND = {
  FINISHED: "ok", ALIVE: "ok", CREATED: "ok",
  FAILED: "bad", DEAD: "bad",
  RUNNING: "run", SUBMITTED_TO_WORKER: "run", RESTARTING: "wait", RESCHEDULING: "wait",
  PENDING_ARGS_AVAIL: "wait", PENDING_NODE_ASSIGNMENT: "wait", PENDING: "wait",
  PENDING_CREATION: "wait", DEPENDENCIES_UNREADY: "wait",
};
const STATE_LABEL = { SUBMITTED_TO_WORKER: "SCHEDULED", PENDING_NODE_ASSIGNMENT: "PENDING",
                      PENDING_ARGS_AVAIL: "WAITING ARGS" };

Z.badge = (state) => `<span class="badge ${STATE_KIND[state] || ""}" title="${Z.esc(state)}">` +
  `${Z.esc(STATE_LABEL[state] || state || "?")}</span>`;
Z.stateLabel = (state) => STATE_LABEL[state] || state;

// a bar of used / total; ``alarm``: amber past 80%, red past 95% (memory, stores; not CPUs,
// which are meant to be busy)
Z.meter = function (used, total, text, alarm = true) {
  if (!total) return '<span class="id">—</span>';
  const pct = Math.max(0, Math.min(100, 100 * used / total));
  const cls = !alarm ? "" : pct >= 95 ? "full" : pct >= 80 ? "warn" : "";
  return `<div class="meter"><div class="bar ${cls}"><span style="width:${pct.toFixed(1)}%"></span></div>` +
    `<div class="text">${text || `${Z.num(used)} / ${Z.num(total)}`}</div></div>`;
};

Z.panel = (title, body, hint = "") =>
  `<section class="panel"><div class="panel-head"><h2>${title}</h2><span class="hint">${hint}</span></div>${body}</section>`;

Z.table = function (columns, rows, options = {}) {
  if (!rows.length) return `<p class="empty">${options.empty || "Nothing here yet."}</p>`;
  const head = columns.map((c) => `<th class="${c.cls || ""}">${c.title}</th>`).join("");
  const body = rows.map((row, i) => {
    const attrs = options.rowAttrs ? options.rowAttrs(row, i) : "";
    return `<tr ${attrs}>` + columns.map((c) => `<td class="${c.cls || ""}">${c.cell(row)}</td>`).join("") + "</tr>";
  }).join("");
  return `<div class="table-wrap"><table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div>`;
};

// a colour per name: distinct for the first names given to Z.assignColours, then hashed
// neighbours differ in hue as much as they can (the first names get the first colours)
const PALETTE = ["#3b82f6", "#f59e0b", "#10b981", "#ec4899", "#8b5cf6", "#06b6d4",
                 "#f97316", "#84cc16", "#6366f1", "#e11d48", "#a855f7", "#eab308"];
Z.assigned = {};
Z.assignColours = function (names) {
  Z.assigned = {};
  names.slice(0, PALETTE.length).forEach((name, i) => { Z.assigned[name] = PALETTE[i]; });
};
Z.colour = function (name) {
  if (Z.assigned[name]) return Z.assigned[name];
  let h = 0;
  for (const ch of String(name)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
};

// --- status and refresh ---------------------------------------------------------------

Z.status = function (ok, text) {
  const box = document.getElementById("status");
  box.className = "status " + (ok ? "live" : "down");
  document.getElementById("status-text").textContent = text;
};

Z.refreshEvery = function (seconds, fn) {
  clearInterval(Z.timer);
  const run = async () => {
    if (document.hidden) return;
    try {
      await fn();
      Z.status(true, "live · " + Z.clock(Date.now()));
    } catch (err) {
      Z.status(false, err.message);
    }
  };
  Z.timer = setInterval(run, seconds * 1000);
  return run();
};

Z.fail = function (main, err) {
  main.insertAdjacentHTML("afterbegin", `<div class="error-box">${Z.esc(err.message || err)}</div>`);
  Z.status(false, err.message || String(err));
};
