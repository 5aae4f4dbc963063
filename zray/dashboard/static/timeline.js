// Timeline: zray.timeline()'s Chrome-trace events drawn as a Gantt chart, one lane
// per worker, grouped per node; the trace itself can be downloaded for Perfetto.
"use strict";

Z.pages.timeline = {
  title: "Timeline",
  window: "all", trace: [], MAX: 4000,   // bars drawn at most (the newest); the download has all

  async show(main) {
    this.window = Z.query("window") || "all";
    main.innerHTML = `<div class="page-head"><div><h1>Timeline</h1>
      <p>One bar per task execution, on the worker that ran it. Arrows join a task to the tasks it submitted.</p></div>
      <div class="toolbar" style="margin:0">
        <select id="tl-window">
          <option value="all">Everything kept</option><option value="60">Last minute</option>
          <option value="10">Last 10 seconds</option></select>
        <button class="button" id="tl-reload">Reload</button>
        <a class="button primary" href="/api/timeline?download=1" download>Download trace JSON</a></div></div>
      <div id="tl"></div>`;
    const select = document.getElementById("tl-window");
    select.value = this.window;
    select.addEventListener("change", () => { this.window = select.value; Z.setQuery({ window: this.window === "all" ? null : this.window }); this.draw(); });
    document.getElementById("tl-reload").addEventListener("click", () => this.load());
    clearInterval(Z.timer);
    await this.load();
  },

  async load() {
    try {
      this.trace = await Z.api("/api/timeline");
      Z.status(true, "live · " + Z.clock(Date.now()));
    } catch (err) { Z.fail(document.getElementById("main"), err); return; }
    this.draw();
  },

  lanes(slices) {
    const names = {}, nodes = new Map();
    for (const e of this.trace) {
      if (e.ph === "M" && e.name === "process_name") names[e.pid] = e.args.name;
    }
    for (const s of slices) {
      if (!nodes.has(s.pid)) nodes.set(s.pid, new Set());
      nodes.get(s.pid).add(s.tid);
    }
    const out = [];
    for (const [node, tids] of [...nodes.entries()].sort()) {
      out.push({ header: true, node, label: names[node] || `node ${String(node).slice(0, 12)}` });
      for (const tid of [...tids].sort((a, b) => a - b)) out.push({ node, tid, label: `worker ${tid}` });
    }
    return out;
  },

  draw() {
    const box = document.getElementById("tl");
    let slices = this.trace.filter((e) => e.ph === "X");
    if (!slices.length) {
      box.innerHTML = Z.panel("Executions", '<p class="empty">No task has run yet: run some and press Reload.</p>');
      return;
    }
    const end = slices.reduce((m, s) => Math.max(m, s.ts + s.dur), -Infinity);
    if (this.window !== "all") {
      const from = end - Number(this.window) * 1e6;
      slices = slices.filter((s) => s.ts + s.dur >= from);
    }
    const kept = slices.length;
    if (kept > this.MAX) slices = slices.slice().sort((a, b) => b.ts - a.ts).slice(0, this.MAX);
    const start = slices.reduce((m, s) => Math.min(m, s.ts), Infinity);
    const lanes = this.lanes(slices);
    const W = Math.max(600, box.clientWidth - 2), LABEL = 190, AXIS = 28, LANE = 24, HEAD = 26, PAD = 12;
    const span = Math.max(end - start, 1);
    const x = (ts) => LABEL + (W - LABEL - PAD) * (ts - start) / span;
    let y = AXIS, svg = "";
    const laneY = new Map();
    for (const lane of lanes) {
      if (lane.header) {
        svg += `<rect class="node-band" x="0" y="${y}" width="${W}" height="${HEAD}"/>` +
          `<text class="node-label" x="10" y="${y + 17}">${Z.esc(lane.label)}</text>`;
        y += HEAD;
      } else {
        laneY.set(`${lane.node}|${lane.tid}`, y);
        svg += `<text class="lane-label" x="22" y="${y + 16}">${Z.esc(lane.label)}</text>` +
          `<line class="tick" x1="${LABEL}" x2="${W - PAD}" y1="${y + LANE}" y2="${y + LANE}"/>`;
        y += LANE;
      }
    }
    const height = y + 8;
    // time axis: about eight ticks at 1, 2 or 5 times a power of ten
    const rough = span / 8, pow = Math.pow(10, Math.floor(Math.log10(rough)));
    const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= rough);
    let axis = "";
    for (let t = 0; t <= span + 1; t += step) {
      const tx = x(start + t);
      axis += `<line class="tick" x1="${tx}" x2="${tx}" y1="${AXIS - 6}" y2="${height}"/>` +
        `<text class="tick-label" x="${tx}" y="${AXIS - 10}" text-anchor="${tx > W - 40 ? "end" : "middle"}">${t ? "+" + Z.esc(Z.duration(t / 1e3)) : "0"}</text>`;
    }
    const counts = {};
    for (const s of slices) counts[s.name] = (counts[s.name] || 0) + 1;
    const byCount = Object.entries(counts).sort((a, b) => b[1] - a[1]);
    Z.assignColours(byCount.map(([name]) => name));
    let bars = "";
    slices.forEach((s, i) => {
      const ly = laneY.get(`${s.pid}|${s.tid}`);
      const bx = x(s.ts), bw = Math.max(1.5, x(s.ts + s.dur) - bx);
      const failed = s.args && s.args.state === "FAILED";
      bars += `<rect class="slice${failed ? " failed" : ""}" data-i="${i}" x="${bx.toFixed(1)}" y="${ly + 4}" width="${bw.toFixed(1)}" height="${LANE - 8}" rx="2" fill="${Z.colour(s.name)}">` +
        `<title>${Z.esc(s.name)} · ${Z.esc(Z.duration(s.dur / 1e3))}${failed ? " · FAILED" : ""}</title></rect>`;
    });
    const arrows = this.arrows(laneY, x, start, LANE);
    const legend = byCount.slice(0, 12)
      .map(([name, n]) => `<span><i style="background:${Z.colour(name)}"></i>${Z.esc(name)} (${n})</span>`).join("");
    box.innerHTML = Z.panel("Executions",
      `<div class="panel-body" style="padding-bottom:4px"><div class="legend">${legend}</div></div>
       <svg class="gantt" viewBox="0 0 ${W} ${height}" height="${height}">
         <defs><marker id="arrow" viewBox="0 0 6 6" refX="5" refY="3" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L6,3 L0,6 z" fill="#475569"/></marker></defs>
         ${axis}${svg}${bars}${arrows}</svg>
       <div class="slice-info" id="slice-info">Point at a bar for its task; click it to open the task.</div>`,
      (kept > slices.length ? `the newest ${slices.length} of ${kept} executions` : `${slices.length} executions`) +
      ` on ${lanes.filter((l) => !l.header).length} workers over ${Z.duration(span / 1e3)}`);
    const info = document.getElementById("slice-info");
    box.querySelectorAll("rect.slice").forEach((rect) => {
      const s = slices[Number(rect.dataset.i)];
      rect.addEventListener("mouseenter", () => {
        info.innerHTML = `<b>${Z.esc(s.name)}</b> · ${Z.esc(Z.duration(s.dur / 1e3))} · ${Z.badge(s.args.state)} · task <span class="mono">${Z.esc(s.args.task_id)}</span> · worker ${Z.esc(s.tid)} · started ${Z.clock(s.ts / 1e3)}`;
      });
      rect.addEventListener("click", () => { location.href = "/tasks?task_id=" + encodeURIComponent(s.args.task_id); });
    });
  },

  arrows(laneY, x, start, LANE) {
    const starts = {};
    for (const e of this.trace) if (e.ph === "s") starts[e.id] = e;
    let out = "";
    for (const e of this.trace) {
      if (e.ph !== "f" || !starts[e.id] || e.ts < start) continue;
      const s = starts[e.id];
      const y1 = laneY.get(`${s.pid}|${s.tid}`), y2 = laneY.get(`${e.pid}|${e.tid}`);
      if (y1 === undefined || y2 === undefined) continue;
      out += `<line x1="${x(s.ts).toFixed(1)}" y1="${y1 + LANE / 2}" x2="${x(e.ts).toFixed(1)}" y2="${y2 + LANE / 2}" stroke="#475569" stroke-width="1" stroke-dasharray="3 2" marker-end="url(#arrow)"/>`;
    }
    return out;
  },
};
