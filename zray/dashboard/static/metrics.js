// Metrics: what the head exports to Prometheus (cluster metrics and user metrics).
"use strict";

Z.pages.metrics = {
  title: "Metrics",
  async show(main) {
    main.innerHTML = `<div class="page-head"><div><h1>Metrics</h1>
      <p>The cluster's and applications' metrics (<code>zray.util.metrics</code>), as Prometheus scrapes them.</p></div>
      <a class="button" href="/metrics" target="_blank" rel="noopener">Prometheus text</a></div>
      <div id="metric-list"></div>`;
    await Z.refreshEvery(5, () => this.refresh());
  },

  async refresh() {
    const families = await Z.api("/api/metrics");
    const columns = [
      { title: "Series", cell: (s) => `<span class="mono">${Z.esc(s.name)}</span>` },
      { title: "Labels", cell: (s) => Object.entries(s.labels).map(([k, v]) =>
          `<span class="chip static">${Z.esc(k)}=${Z.esc(k === "NodeId" ? v.slice(0, 12) : v)}</span>`).join(" ") },
      { title: "Value", cls: "num", cell: (s) => s.value === null ? "—" : Z.esc(Z.num(s.value)) },
    ];
    document.getElementById("metric-list").innerHTML = families.length ? families.map((f) =>
      Z.panel(`<span class="mono">${Z.esc(f.name)}</span> <span class="tag">${Z.esc(f.type)}</span>`,
        Z.table(columns, f.samples, { empty: "no samples" }), Z.esc(f.help))).join("") :
      '<p class="empty">No metric yet.</p>';
  },
};
