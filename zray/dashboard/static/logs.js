// Logs: what workers printed (kept at the head), one worker or all, followed live.
"use strict";

Z.pages.logs = {
  title: "Logs",
  pid: null, node: null, next: 0, follow: true, sources: [],

  async show(main) {
    this.pid = Z.query("pid");
    this.node = Z.query("node_id");
    main.innerHTML = `<div class="page-head"><div><h1>Logs</h1>
      <p>What tasks and actors printed to stdout and stderr, from any node.</p></div></div>
      <div class="logs-layout">
        <section class="panel"><div class="panel-head"><h2>Workers</h2><span class="hint" id="source-count"></span></div>
          <div class="sources" id="sources"></div></section>
        <section class="panel"><div class="panel-head"><h2 id="log-title">Output</h2>
          <span class="hint"><label class="check"><input type="checkbox" id="follow" checked> follow</label></span></div>
          <pre class="logview" id="logview"></pre></section></div>`;
    document.getElementById("follow").addEventListener("change", (e) => { this.follow = e.target.checked; });
    document.getElementById("sources").addEventListener("click", (e) => {
      const link = e.target.closest("a[data-pid]");
      if (!link) return;
      e.preventDefault();
      this.pid = link.dataset.pid || null;
      this.node = link.dataset.node || null;
      Z.setQuery({ pid: this.pid, node_id: this.node });
      this.restart();
    });
    this.restart();
  },

  async restart() {
    this.next = 0;
    this.placeholder = false;
    document.getElementById("logview").innerHTML = "";
    await Z.refreshEvery(1.5, () => this.refresh());
  },

  async refresh() {
    const params = new URLSearchParams();
    if (this.pid) params.set("pid", this.pid);
    if (this.node) params.set("node_id", this.node);
    if (this.next) { params.set("since", this.next); params.set("tail", "-1"); }
    else params.set("tail", "2000");
    const [sources, logs] = await Promise.all([Z.api("/api/logs/sources"), Z.api("/api/logs?" + params)]);
    this.sources = sources;
    this.renderSources();
    this.append(logs.chunks, logs.next);
  },

  renderSources() {
    const item = (pid, node, title, meta) => {
      const on = (this.pid || "") === (pid || "") && (!pid || (this.node || "") === (node || "") || !this.node);
      return `<a href="#" class="source ${on ? "on" : ""}" data-pid="${Z.esc(pid || "")}" data-node="${Z.esc(node || "")}">
        <div class="title">${title}</div><div class="meta">${meta}</div></a>`;
    };
    const shown = this.node && !this.pid ? this.sources.filter((s) => s.node_id === this.node) : this.sources;
    let html = item(null, this.node && !this.pid ? this.node : null, this.node && !this.pid ? "All workers of this node" : "All workers",
                    `${shown.length} with output`);
    for (const s of shown) {
      html += item(String(s.pid), s.node_id, `${Z.esc(s.label)} <span class="id">pid ${Z.esc(s.pid)}</span>` +
                     (s.stderr ? ' <span class="badge bad">stderr</span>' : ""),
                   `node ${Z.esc((s.node_id || "?").slice(0, 8))} · ${s.chunks} chunk${s.chunks === 1 ? "" : "s"} · ${Z.ago(s.last_time * 1000)}`);
    }
    document.getElementById("sources").innerHTML = html;
    document.getElementById("source-count").textContent = `${this.sources.length}`;
    const current = this.sources.find((s) => String(s.pid) === this.pid);
    document.getElementById("log-title").textContent = this.pid ?
      `${current ? current.label : "worker"} · pid ${this.pid}` : "All workers";
  },

  append(chunks, next) {
    const view = document.getElementById("logview");
    const atBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 40;
    let html = "";
    for (const c of chunks) {
      const who = this.pid ? "" : `<span class="who">(pid=${Z.esc(c.pid)}, node=${Z.esc((c.node_id || "?").slice(0, 8))}) </span>`;
      for (const line of c.text.replace(/\n$/, "").split("\n")) {
        html += who + (c.stream === "stderr" ? `<span class="err">${Z.esc(line)}</span>` : Z.esc(line)) + "\n";
      }
    }
    if (html) {
      if (this.placeholder) { view.innerHTML = ""; this.placeholder = false; }
      view.insertAdjacentHTML("beforeend", html);
    } else if (!view.textContent) {
      view.innerHTML = '<span class="who">No output kept for this selection yet.</span>\n';
      this.placeholder = true;
    }
    this.next = next;
    if (this.follow && (atBottom || html)) view.scrollTop = view.scrollHeight;
  },
};
