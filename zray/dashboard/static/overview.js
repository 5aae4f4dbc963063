// Overview: cluster totals, usage over the last minutes, and the nodes.
"use strict";

Z.pages.overview = {
  title: "Overview",
  async show(main) {
    main.innerHTML = `<div class="page-head"><div><h1>Cluster overview</h1>
      <p>Nodes, logical resources in use and the object stores, refreshed every 3 s.</p></div></div>
      <div id="cards" class="cards"></div>
      <div id="usage"></div><div id="nodes"></div>`;
    await Z.refreshEvery(3, () => this.refresh());
  },

  async refresh() {
    const [cluster, nodes, history] = await Promise.all(
      [Z.api("/api/cluster"), Z.api("/api/nodes"), Z.api("/api/history")]);
    document.getElementById("cards").innerHTML = this.cards(cluster);
    const samples = history.samples, span = samples.length > 1 ? samples[samples.length - 1].time - samples[0].time : 0;
    document.getElementById("usage").innerHTML = Z.panel("Usage", this.chart(samples),
      `the last ${Z.duration(span * 1000)}, sampled every ${history.interval_s} s by the dashboard`);
    document.getElementById("nodes").innerHTML = Z.panel(
      `Nodes <span class="tag">${nodes.filter((n) => n.state === "ALIVE").length} alive</span>`,
      this.nodeTable(nodes));
  },

  cards(c) {
    const total = c.resources_total, used = c.resources_used;
    const tasks = c.tasks_by_state;
    const colours = { ok: "#16a34a", bad: "#dc2626", run: "#2563eb", wait: "#d97706" };
    const kind = (s) => ({ FINISHED: "ok", FAILED: "bad", RUNNING: "run", SUBMITTED_TO_WORKER: "run" }[s] || (s.startsWith("PENDING") ? "wait" : ""));
    const entries = Object.entries(tasks).sort((a, b) => b[1] - a[1]);
    const sum = entries.reduce((a, [, n]) => a + n, 0) || 1;
    const taskChips = entries.length ? `<div class="stack">${entries.map(([s, n]) =>
        `<span title="${Z.esc(Z.stateLabel(s))}: ${n}" style="width:${(100 * n / sum).toFixed(2)}%;background:${colours[kind(s)] || "#9ca3af"}"></span>`).join("")}</div>
      <div class="sub">${entries.map(([s, n]) => `${n} ${Z.esc(Z.stateLabel(s).toLowerCase())}`).join(" · ")}</div>` : "";
    const actorsAlive = c.actors_by_state.ALIVE || 0;
    const actorsTotal = Object.values(c.actors_by_state).reduce((a, b) => a + b, 0);
    const cards = [
      `<div class="card"><div class="label">Nodes</div><div class="value">${c.nodes_alive}
        <small>alive</small></div><div class="sub">${c.nodes_dead} dead</div></div>`,
      `<div class="card"><div class="label">CPU</div><div class="value">${Z.num(used.CPU || 0)}
        <small>/ ${Z.num(total.CPU || 0)} in use</small></div>${Z.meter(used.CPU || 0, total.CPU || 0, " ", false)}</div>`,
    ];
    if (total.GPU) {
      cards.push(`<div class="card"><div class="label">GPU</div><div class="value">${Z.num(used.GPU || 0)}
        <small>/ ${Z.num(total.GPU)} in use</small></div>${Z.meter(used.GPU || 0, total.GPU, " ", false)}</div>`);
    }
    cards.push(
      `<div class="card"><div class="label">Object store</div><div class="value">${Z.bytes(c.object_store_used_bytes)}</div>
        ${Z.meter(c.object_store_used_bytes, c.object_store_bound_bytes,
                  `of ${Z.bytes(c.object_store_bound_bytes)} · ${Z.bytes(c.object_store_spilled_bytes)} spilled`)}</div>`,
      `<div class="card"><div class="label">Tasks</div><div class="value">${c.tasks_total}
        <small>attempts</small></div>${taskChips || '<div class="sub">none yet</div>'}</div>`,
      `<div class="card"><div class="label">Actors</div><div class="value">${actorsAlive}
        <small>alive</small></div><div class="sub">${actorsTotal} in all</div></div>`);
    return cards.join("");
  },

  chart(samples) {
    if (samples.length < 2) return '<p class="empty">Collecting samples…</p>';
    const W = Math.max(400, (document.getElementById("usage").clientWidth || 1032) - 34), H = 170, L = 40, R = 10, T = 10, B = 24;
    const t0 = samples[0].time, t1 = samples[samples.length - 1].time;
    const x = (t) => L + (W - L - R) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
    const y = (f) => T + (H - T - B) * (1 - Math.max(0, Math.min(1, f)));
    const line = (key, colour) => {
      const pts = samples.map((s) => `${x(s.time).toFixed(1)},${y(key(s)).toFixed(1)}`).join(" ");
      return `<polyline points="${pts}" fill="none" stroke="${colour}" stroke-width="2" stroke-linejoin="round"/>`;
    };
    let grid = "";
    for (const f of [0, 0.5, 1]) {
      grid += `<line class="grid" x1="${L}" x2="${W - R}" y1="${y(f)}" y2="${y(f)}"/>` +
        `<text class="axis" x="${L - 6}" y="${y(f) + 4}" text-anchor="end">${f * 100}%</text>`;
    }
    const span = Math.round(t1 - t0);
    grid += `<text class="axis" x="${L}" y="${H - 6}">${span >= 60 ? Math.round(span / 60) + " min ago" : span + " s ago"}</text>` +
      `<text class="axis" x="${W - R}" y="${H - 6}" text-anchor="end">now</text>`;
    const cpu = (s) => s.cpu_total ? s.cpu_used / s.cpu_total : 0;
    const store = (s) => s.store_bound ? s.store_used / s.store_bound : 0;
    const gpu = (s) => s.gpu_total ? s.gpu_used / s.gpu_total : 0;
    const hasGpu = samples.some((s) => s.gpu_total);
    return `<div class="panel-body"><div class="legend"><span><i style="background:#2563eb"></i>CPU in use</span>
      ${hasGpu ? '<span><i style="background:#8b5cf6"></i>GPU in use</span>' : ""}
      <span><i style="background:#10b981"></i>object store used</span></div>
      <svg class="chart" viewBox="0 0 ${W} ${H}" height="${H}">${grid}
      ${line(store, "#10b981")}${hasGpu ? line(gpu, "#8b5cf6") : ""}${line(cpu, "#2563eb")}</svg></div>`;
  },

  nodeTable(nodes) {
    const res = (n, k) => [(n.resources_total || {})[k] || 0,
                           ((n.resources_total || {})[k] || 0) - ((n.ResourcesAvailable || {})[k] || 0)];
    const anyGpu = nodes.some((n) => (n.resources_total || {}).GPU);
    const columns = [
      { title: "Node", cell: (n) => Z.short(n.node_id) +
          ((n.resources_total || {})["node:__internal_head__"] ? '<span class="tag">head</span>' : "") },
      { title: "State", cell: (n) => Z.badge(n.state) },
      { title: "Address", cell: (n) => `${Z.esc(n.node_ip)}<div class="id">${Z.esc(n.node_name)}</div>` },
      { title: "CPU", cell: (n) => { const [t, u] = res(n, "CPU"); return Z.meter(u, t, null, false); } },
    ];
    if (anyGpu) columns.push({ title: "GPU", cell: (n) => { const [t, u] = res(n, "GPU"); return Z.meter(u, t, null, false); } });
    columns.push(
      { title: "Memory", cell: (n) => { const [t, u] = res(n, "memory"); return Z.meter(u, t, `${Z.bytes(u)} / ${Z.bytes(t)}`); } },
      { title: "Object store", cell: (n) => { const s = n.object_store || {};
          return s.bound_bytes ? Z.meter(s.used_bytes, s.bound_bytes, `${Z.bytes(s.used_bytes)} / ${Z.bytes(s.bound_bytes)}`) : '<span class="id">no report yet</span>'; } },
      { title: "Spilled", cls: "num", cell: (n) => { const s = n.object_store || {};
          return s.spilled_bytes ? `${Z.bytes(s.spilled_bytes)} <span class="id">(${s.spilled_objects})</span>` : "—"; } },
      { title: "PID", cls: "num", cell: (n) => Z.esc(n.pid ?? "—") },
      { title: "", cell: (n) => n.state === "ALIVE" ? `<a href="/logs?node_id=${encodeURIComponent(n.node_id)}">logs</a>` :
          `<span class="id" title="${Z.esc(n.death_reason)}">${Z.esc((n.death_reason || "").slice(0, 40))}</span>` });
    return Z.table(columns, nodes, { empty: "No node has joined yet." });
  },
};
