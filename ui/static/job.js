// A fine-tuning run: state, progress with the time left, the loss curve, the actions that fit the state,
// and the final metrics; refreshed while the run is queued or running.
"use strict";
(() => {
  const root = document.getElementById("job");
  const svg = document.getElementById("chart-loss");
  const $ = (id) => document.getElementById(id);

  function duration(s) {
    if (s === null || s === undefined) return "";
    if (s < 90) return `about ${Math.max(1, Math.round(s))} s left`;
    if (s < 5400) return `about ${Math.round(s / 60)} min left`;
    return `about ${(s / 3600).toFixed(1)} h left`;
  }

  function flatten(obj, prefix, out) {
    for (const [k, v] of Object.entries(obj || {})) {
      if (v !== null && typeof v === "object" && !Array.isArray(v)) flatten(v, `${prefix}${k}.`, out);
      else out.push([prefix + k, v]);
    }
    return out;
  }

  function render(run) {
    const losses = run.points.filter((p) => p.loss !== undefined);
    const series = [{name: "loss", points: losses.map((p) => [p.step, p.loss])}];
    if (run.points.some((p) => p.eval_loss !== undefined)) {
      series.push({name: "eval loss", points: run.points.filter((p) => p.eval_loss !== undefined).map((p) => [p.step, p.eval_loss])});
    }
    Charts.draw(svg, series, {width: 720, zero: false, xLabel: (x) => `step ${Math.round(x)}`, empty: "no loss logged yet"});
    $("job-state").textContent = run.state;
    $("job-state").className = `tag state-${run.state}`;
    $("job-progress").value = run.progress || 0;
    $("job-step").textContent = run.step === null ? "" : `step ${run.step}${run.total ? " / " + run.total : ""}`;
    $("job-eta").textContent = duration(run.eta);
    $("job-updated").textContent = run.updated_at || "—";
    $("job-message").textContent = run.message || "";
    $("loss-count").textContent = String(losses.length);
    $("loss-last").textContent = losses.length ? losses[losses.length - 1].loss.toFixed(4) : "—";
    $("job-base").textContent = run.base || "—";
    $("job-adapter").textContent = run.adapter || "—";
    $("job-created").textContent = run.created_at || "—";
    document.querySelectorAll("#job-actions [data-when]").forEach((form) => {
      form.hidden = !form.dataset.when.split(" ").includes(run.state);
    });
    if (run.final) {
      const table = $("final-metrics");
      table.replaceChildren(...flatten(run.final, "", []).map(([k, v]) => {
        const tr = AIGC.el("tr");
        tr.append(AIGC.el("th", {}, k), AIGC.el("td", {}, String(v)));
        return tr;
      }));
      $("final-card").hidden = false;
    }
    return run.state === "queued" || run.state === "running";
  }

  async function tick() {
    let again = true;
    try { again = render(await AIGC.json(root.dataset.api)); } catch (e) { /* banner shows it */ }
    if (again) setTimeout(tick, 2000);
  }
  tick();
})();
