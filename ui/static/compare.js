// Side by side: one prompt streamed from the base model and each picked adapter at the same time.
"use strict";
(() => {
  const root = document.getElementById("compare");
  const form = document.getElementById("compare-form");
  const error = document.getElementById("compare-error");
  const answers = document.getElementById("compare-answers");
  // plain completions: adapters here are trained on raw text (e.g. Coq files), not on a chat template
  const url = `${root.dataset.invoke}?path=${encodeURIComponent("/v1/completions")}`;

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const models = [...form.querySelectorAll("input[name=model]:checked")].map((i) => i.value);
    error.hidden = models.length >= 1 && models.length <= 3;
    if (!error.hidden) { error.textContent = "pick one to three models"; return; }
    const button = document.getElementById("compare-submit");
    button.disabled = true;
    const columns = models.map((model) => {
      const column = AIGC.el("section", {class: "card answer", "data-model": model});
      const out = AIGC.el("pre", {class: "output", "aria-live": "polite"});
      const note = AIGC.el("p", {class: "muted"}, "waiting for the first token…");
      column.append(AIGC.el("h2", {}, model), out, note);
      return {model, column, out, note};
    });
    answers.replaceChildren(...columns.map((c) => c.column));
    const body = (model) => ({model, stream: true, max_tokens: Number(document.getElementById("compare-max").value || 48),
                              temperature: Number(document.getElementById("compare-temperature").value || 0),
                              prompt: document.getElementById("compare-prompt").value});
    await Promise.all(columns.map(async (c) => {
      const started = performance.now();
      try {
        const failed = await AIGC.streamText(url, body(c.model), undefined, (text) => { c.out.textContent += text; });
        c.note.textContent = failed || `done in ${((performance.now() - started) / 1000).toFixed(2)} s`;
        c.column.dataset.done = failed ? "error" : "ok";
      } catch (e) {
        c.note.textContent = String(e.message || e);
        c.column.dataset.done = "error";
      }
    }));
    button.disabled = false;
  });
})();
