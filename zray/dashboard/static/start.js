// Picks the page the path names, marks it in the navigation, and shows it.
"use strict";

(function () {
  const byPath = { "/": "overview", "/tasks": "tasks", "/actors": "actors", "/timeline": "timeline",
                   "/logs": "logs", "/cluster-metrics": "metrics" };
  const name = byPath[location.pathname.replace(/\/+$/, "") || "/"] || "overview";
  const page = Z.pages[name];
  document.title = `${page.title} · zray dashboard`;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  const main = document.getElementById("main");
  page.show(main).catch((err) => Z.fail(main, err));
})();
