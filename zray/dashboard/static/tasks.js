// Tasks: state counts, the latest failures with their tracebacks, and every attempt.
"use strict";

Z.pages.tasks = {
  title: "Tasks",
  state: null, search: "", selected: null, rows: [],

  async show(main) {
    this.state = Z.query("state");
    this.search = Z.query("name") || "";
    this.selected = Z.query("task_id");
    main.innerHTML = `<div class="page-head"><div><h1>Tasks</h1>
      <p>Every task attempt the head remembers, newest first; actor calls are listed as <code>ACTOR_TASK</code>.</p></div></div>
      <div class="toolbar"><div id="state-chips" class="chips"></div><span class="spacer"></span>
        <input type="search" id="task-search" placeholder="Filter by function name…" value="${Z.esc(this.search)}"></div>
      <div id="detail"></div><div id="failures"></div><div id="task-table"></div>`;
    document.getElementById("task-search").addEventListener("input", (e) => {
      this.search = e.target.value; Z.setQuery({ name: this.search }); this.renderTable();
    });
    document.getElementById("state-chips").addEventListener("click", (e) => {
      const chip = e.target.closest("[data-state]");
      if (!chip) return;
      this.state = chip.dataset.state || null;
      Z.setQuery({ state: this.state });
      this.refresh();
    });
    document.getElementById("task-table").addEventListener("click", (e) => {
      const row = e.target.closest("tr[data-task]");
      if (row) this.select(row.dataset.task);
    });
    await Z.refreshEvery(3, () => this.refresh());
  },

  async refresh() {
    const query = this.state ? `?state=${encodeURIComponent(this.state)}&limit=2000` : "?limit=2000";
    const [summary, rows, failed] = await Promise.all([
      Z.api("/api/tasks/counts"), Z.api("/api/tasks" + query),
      Z.api("/api/tasks?state=FAILED&limit=5")]);
    this.rows = rows;
    this.renderChips(summary);
    this.renderFailures(failed);
    this.renderTable();
    if (this.selected) await this.renderDetail();
  },

  renderChips(summary) {
    const counts = summary.by_state;
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const order = ["RUNNING", "SUBMITTED_TO_WORKER", "PENDING_NODE_ASSIGNMENT", "PENDING_ARGS_AVAIL",
                   "FINISHED", "FAILED", "CANCELLED"];
    const states = Object.keys(counts).sort((a, b) => order.indexOf(a) - order.indexOf(b));
    const chip = (state, label, n) => `<span class="chip ${(this.state || "") === state ? "on" : ""}" data-state="${Z.esc(state)}">${Z.esc(label)} <b>${n}</b></span>`;
    document.getElementById("state-chips").innerHTML =
      chip("", "All", total) + states.map((s) => chip(s, Z.stateLabel(s), counts[s])).join("");
  },

  renderFailures(failed) {
    const box = document.getElementById("failures");
    // hidden while a task is open (its traceback is there) or another state is chosen
    if (!failed.length || this.selected || this.state && this.state !== "FAILED") { box.innerHTML = ""; return; }
    const items = failed.slice(0, 3).map((t, i) => `<div class="failure">
        <div class="failure-head"><span class="error-type">${Z.esc(t.error_type || "Error")}</span>
          <span class="name">${Z.esc(t.name)}</span>
          <span class="meta">task ${Z.tid(t.task_id)} · attempt ${t.attempt_number} · node ${Z.short(t.node_id, 8)} · pid ${Z.esc(t.worker_pid ?? "—")} · ${Z.ago(t.end_time_ms)}</span>
          <a href="/tasks?task_id=${encodeURIComponent(t.task_id)}" data-select="${Z.esc(t.task_id)}">details</a></div>
        ${i === 0 ? this.traceback(t.error_message) :
          `<details><summary>traceback</summary>${this.traceback(t.error_message)}</details>`}</div>`).join("");
    box.innerHTML = Z.panel(`Recent failures <span class="tag" style="background:var(--bad-soft);color:var(--bad)">${failed.length}${failed.length >= 5 ? "+" : ""}</span>`,
      items, "the newest first");
    box.querySelectorAll("[data-select]").forEach((a) => a.addEventListener("click", (e) => {
      e.preventDefault(); this.select(a.dataset.select);
    }));
  },

  traceback(text) {
    if (!text) return '<pre class="traceback">(no message)</pre>';
    const lines = Z.esc(text).split("\n").map((line) =>
      /^\s*File "|^Traceback/.test(line) ? line : /Error|Exception/.test(line) ? `<span class="hl">${line}</span>` : line);
    return `<pre class="traceback">${lines.join("\n")}</pre>`;
  },

  renderTable() {
    const needle = this.search.toLowerCase();
    const rows = this.rows.filter((t) => !needle || (t.name || "").toLowerCase().includes(needle));
    const shown = rows.slice(0, 500);
    const columns = [
      { title: "State", cell: (t) => Z.badge(t.state) },
      { title: "Function", cell: (t) => `<b>${Z.esc(t.name)}</b>` + (t.type !== "NORMAL_TASK" ? `<div class="id">${Z.esc(t.type)}</div>` : "") },
      { title: "Task", cell: (t) => Z.tid(t.task_id) + (t.attempt_number ? ` <span class="tag">retry ${t.attempt_number}</span>` : "") },
      { title: "Node", cell: (t) => Z.short(t.node_id, 8) },
      { title: "Worker", cls: "num", cell: (t) => t.worker_pid ? `<a href="/logs?pid=${t.worker_pid}&node_id=${encodeURIComponent(t.node_id || "")}">${t.worker_pid}</a>` : "—" },
      { title: "Submitted", cell: (t) => Z.clock(t.creation_time_ms) },
      { title: "Duration", cls: "num", cell: (t) => Z.duration(t.duration_ms) },
      { title: "Error", cls: "err", cell: (t) => Z.esc(t.error_type || "") },
    ];
    const hint = rows.length > shown.length ? `showing ${shown.length} of ${rows.length}` : `${rows.length} attempt${rows.length === 1 ? "" : "s"}`;
    document.getElementById("task-table").innerHTML = Z.panel("Task attempts", Z.table(columns, shown, {
      empty: this.state || needle ? "No task matches." : "No task has been submitted yet.",
      rowAttrs: (t) => `class="clickable ${t.state === "FAILED" ? "failed" : ""} ${t.task_id === this.selected ? "selected" : ""}" data-task="${Z.esc(t.task_id)}"`,
    }), hint + " · click a row for its details");
  },

  async select(taskId) {
    this.selected = taskId;
    Z.setQuery({ task_id: taskId });
    document.getElementById("failures").innerHTML = "";
    this.renderTable();
    await this.renderDetail();
    document.getElementById("detail").scrollIntoView({ behavior: "smooth", block: "start" });
  },

  async renderDetail() {
    const box = document.getElementById("detail");
    let t;
    try { t = await Z.api("/api/tasks/" + encodeURIComponent(this.selected)); }
    catch (err) { box.innerHTML = `<div class="error-box">${Z.esc(err.message)}</div>`; return; }
    const steps = (t.events || []).map((e) => `<div class="step"><b>${Z.esc(Z.stateLabel(e.state))}</b>${Z.clock(e.time_ms)}</div>`).join("");
    const field = (k, v) => `<dt>${k}</dt><dd>${v}</dd>`;
    const body = `<div class="panel-body"><dl class="detail-grid">
        ${field("State", Z.badge(t.state))}${field("Function", `<b>${Z.esc(t.name)}</b> <span class="id">${Z.esc(t.type)}</span>`)}
        ${field("Task id", `<span class="mono">${Z.esc(t.task_id)}</span> · attempt ${t.attempt_number}${t.retried ? " (retried)" : ""}`)}
        ${field("Job", Z.short(t.job_id, 8))}${t.actor_id ? field("Actor", `<span class="mono">${Z.esc(t.actor_id)}</span>`) : ""}
        ${field("Node / worker", `${Z.short(t.node_id, 32)} · pid ${Z.esc(t.worker_pid ?? "—")}`)}
        ${field("Duration", Z.duration(t.duration_ms))}${field("Progress", `<div class="steps">${steps}</div>`)}
      </dl>${t.error_message ? this.traceback(t.error_message) : ""}</div>`;
    box.innerHTML = Z.panel(`Task ${Z.esc(t.name)}`, body, `<a href="#" id="close-detail">close</a>`);
    document.getElementById("close-detail").addEventListener("click", (e) => {
      e.preventDefault(); this.selected = null; Z.setQuery({ task_id: null }); box.innerHTML = ""; this.refresh();
    });
  },
};
