// A fine-tuning run: the loss curve, refreshed while the run is queued or running.
"use strict";
(() => {
  const root = document.getElementById("job");
  const svg = document.getElementById("chart-loss");

  function render(run) {
    const series = [{name: "loss", points: run.points.map((p) => [p.step, p.loss])}];
    if (run.points.some((p) => p.eval_loss !== undefined)) {
      series.push({name: "eval loss", points: run.points.filter((p) => p.eval_loss !== undefined).map((p) => [p.step, p.eval_loss])});
    }
    Charts.draw(svg, series, {width: 720, zero: false, xLabel: (x) => `step ${Math.round(x)}`, empty: "no loss logged yet"});
    document.getElementById("job-state").textContent = run.state;
    document.getElementById("job-progress").value = run.progress || 0;
    document.getElementById("job-step").textContent = run.step === null ? "" : `step ${run.step}${run.total ? " / " + run.total : ""}`;
    document.getElementById("job-updated").textContent = run.updated_at || "—";
    document.getElementById("job-message").textContent = run.message || "";
    document.getElementById("loss-count").textContent = String(run.points.length);
    return run.state === "queued" || run.state === "running";
  }

  async function tick() {
    let again = true;
    try { again = render(await AIGC.json(root.dataset.api)); } catch (e) { /* banner shows it */ }
    if (again) setTimeout(tick, 3000);
  }
  tick();
})();
