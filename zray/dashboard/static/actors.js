// Actors: state, restarts, node, pid and a link to each one's output; placement groups.
"use strict";

Z.pages.actors = {
  title: "Actors",
  async show(main) {
    main.innerHTML = `<div class="page-head"><div><h1>Actors</h1>
      <p>Every actor the head knows, and the placement groups that reserve resources.</p></div></div>
      <div class="toolbar"><div id="actor-chips" class="chips"></div></div>
      <div id="actor-table"></div><div id="pg-table"></div>`;
    await Z.refreshEvery(3, () => this.refresh());
  },

  async refresh() {
    const [actors, groups] = await Promise.all([Z.api("/api/actors"), Z.api("/api/placement_groups")]);
    const counts = {};
    for (const a of actors) counts[a.state] = (counts[a.state] || 0) + 1;
    document.getElementById("actor-chips").innerHTML = Object.entries(counts)
      .map(([s, n]) => `<span class="chip static">${Z.badge(s)}<b>${n}</b></span>`).join("");
    const columns = [
      { title: "State", cell: (a) => Z.badge(a.state) },
      { title: "Class", cell: (a) => `<b>${Z.esc(a.class_name)}</b>` + (a.name ? `<div class="id">name: ${Z.esc(a.name)}</div>` : "") },
      { title: "Actor", cell: (a) => Z.tid(a.actor_id) },
      { title: "Node", cell: (a) => Z.short(a.node_id, 8) },
      { title: "PID", cls: "num", cell: (a) => Z.esc(a.pid ?? "—") },
      { title: "Restarts", cls: "num", cell: (a) => Z.esc(a.restarts ?? 0) },
      { title: "Namespace", cell: (a) => `<span class="id">${Z.esc(a.ray_namespace || "")}</span>` + (a.is_detached ? '<span class="tag">detached</span>' : "") },
      { title: "Death cause", cls: "err", cell: (a) => Z.esc(a.death_cause || "") },
      { title: "", cell: (a) => a.pid ? `<a href="/logs?pid=${a.pid}&node_id=${encodeURIComponent(a.node_id || "")}">logs</a>` : "" },
    ];
    document.getElementById("actor-table").innerHTML = Z.panel("Actors",
      Z.table(columns, actors, { empty: "No actor has been created yet." }), `${actors.length} in all`);
    const pgColumns = [
      { title: "State", cell: (g) => Z.badge(g.state) },
      { title: "Group", cell: (g) => Z.short(g.placement_group_id, 16) + (g.name ? ` <b>${Z.esc(g.name)}</b>` : "") },
      { title: "Strategy", cell: (g) => Z.esc(g.strategy) },
      { title: "Bundles", cell: (g) => Object.values(g.bundles || {}).map((b) =>
          `<span class="chip static">${Z.esc(Object.entries(b).map(([k, v]) => `${k}: ${v}`).join(", "))}</span>`).join(" ") },
      { title: "Nodes", cell: (g) => [...new Set(Object.values(g.bundles_to_node_id || {}))].map((n) => Z.short(n, 8)).join(", ") || "—" },
    ];
    document.getElementById("pg-table").innerHTML = groups.length ?
      Z.panel("Placement groups", Z.table(pgColumns, groups)) : "";
  },
};
