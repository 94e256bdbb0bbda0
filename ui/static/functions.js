// The functions table refreshes itself from /api/functions.
"use strict";
(() => {
  const table = document.getElementById("functions");
  const body = table.querySelector("tbody");

  function cells(fn) {
    return {
      replicas: `${fn.available} / ${fn.replicas}`, invocations: String(fn.invocations),
      cold_starts: String(fn.cold_starts), p50: AIGC.seconds(fn.p50), p95: AIGC.seconds(fn.p95),
      recent_p95: AIGC.seconds(fn.recent_p95),
    };
  }

  function newRow(fn) {
    const tr = AIGC.el("tr", {"data-name": fn.name});
    const link = AIGC.el("a", {href: `/functions/${encodeURIComponent(fn.name)}`}, fn.name);
    const first = AIGC.el("td"); first.appendChild(link); tr.appendChild(first);
    tr.appendChild(AIGC.el("td", {}, fn.engine));
    tr.appendChild(AIGC.el("td", {}, fn.kind));
    tr.appendChild(AIGC.el("td", {class: "mono"}, fn.image));
    for (const field of ["replicas", "invocations", "cold_starts", "p50", "p95", "recent_p95"]) {
      tr.appendChild(AIGC.el("td", {"data-field": field}));
    }
    return tr;
  }

  function render(data) {
    const names = data.functions.map((f) => f.name).join(",");
    const shown = [...body.querySelectorAll("tr[data-name]")].map((tr) => tr.dataset.name).join(",");
    if (names !== shown) body.replaceChildren(...data.functions.map(newRow));
    for (const fn of data.functions) {
      const tr = body.querySelector(`tr[data-name="${CSS.escape(fn.name)}"]`);
      for (const [field, text] of Object.entries(cells(fn))) tr.querySelector(`[data-field="${field}"]`).textContent = text;
    }
    document.getElementById("updated").textContent = `Updated ${Charts.clock(data.time)}.`;
  }

  AIGC.poll(table.dataset.api, 2000, render);
})();
