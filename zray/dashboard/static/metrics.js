// Metrics: what the head exports to Prometheus, the cluster's and the applications'.
"use strict";

Z.pages.metrics = {
  title: "Metrics",
  async show(main) {
    main.innerHTML = `<div class="page-head"><div><h1>Metrics</h1>
      <p>The cluster's metrics and the applications' (<code>zray.util.metrics</code>), as Prometheus scrapes them.</p></div>
      <a class="button" href="/metrics" target="_blank" rel="noopener">Prometheus text</a></div>
      <div id="app-metrics"></div><div id="cluster-metrics"></div>`;
    await Z.refreshEvery(5, () => this.refresh());
  },

  table(families, empty) {
    const rows = [];
    for (const f of families) {
      f.samples.forEach((s, i) => rows.push({ family: f, sample: s, first: i === 0 }));
    }
    const columns = [
      { title: "Metric", cell: (r) => r.first ? `<span class="mono"><b>${Z.esc(r.family.name)}</b></span> <span class="tag">${Z.esc(r.family.type)}</span>` +
          (r.family.help ? `<div class="help">${Z.esc(r.family.help)}</div>` : "") : "" },
      { title: "Series", cell: (r) => r.sample.name !== r.family.name ? `<span class="mono">${Z.esc(r.sample.name.slice(r.family.name.length))}</span>` : "" },
      { title: "Labels", cell: (r) => Object.entries(r.sample.labels).map(([k, v]) =>
          `<span class="chip static">${Z.esc(k)}=${Z.esc(k === "NodeId" ? v.slice(0, 12) : v)}</span>`).join(" ") },
      { title: "Value", cls: "num", cell: (r) => r.sample.value === null ? "—" : Z.esc(Z.num(r.sample.value)) },
    ];
    return Z.table(columns, rows, { empty, rowAttrs: (r) => r.first ? 'class="family-first"' : "" });
  },

  async refresh() {
    const families = await Z.api("/api/metrics");
    const mine = families.filter((f) => f.name.startsWith("zray_"));
    const apps = families.filter((f) => !f.name.startsWith("zray_"));
    document.getElementById("app-metrics").innerHTML = Z.panel("Application metrics",
      this.table(apps, "No application metric yet: record one with zray.util.metrics.Counter, Gauge or Histogram."),
      `${apps.length} metric${apps.length === 1 ? "" : "s"}`);
    document.getElementById("cluster-metrics").innerHTML = Z.panel("Cluster metrics",
      this.table(mine, "No metric yet."), `${mine.length} metrics`);
  },
};
