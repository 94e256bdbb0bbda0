// A function's logs: the last lines, then (when following) each new line as the gateway sends it.
"use strict";
(() => {
  const root = document.getElementById("logs");
  const out = document.getElementById("logs-output");
  const state = document.getElementById("logs-state");
  const MAX_LINES = 5000;  // the page keeps the newest lines only
  let controller = null;

  function show(entry) {
    const line = `${entry.timestamp || ""} ${entry.instance || ""} ${entry.text || ""}`.trim();
    out.append(document.createTextNode(line + "\n"));
    while (out.childNodes.length > MAX_LINES) out.removeChild(out.firstChild);
    out.scrollTop = out.scrollHeight;
  }

  async function load() {
    if (controller) controller.abort();
    controller = new AbortController();
    out.textContent = "";
    out.dataset.state = "loading";
    const follow = document.getElementById("logs-follow").checked;
    const query = new URLSearchParams({tail: document.getElementById("logs-tail").value || "200",
                                       filter: document.getElementById("logs-filter").value, follow: follow ? "1" : "0"});
    state.textContent = "loading…";
    try {
      const resp = await AIGC.call(`${root.dataset.api}?${query}`, {signal: controller.signal});
      if (!resp.ok) {
        const body = await resp.json().catch(() => ({}));
        state.textContent = body.error || `HTTP ${resp.status}`;
        return;
      }
      state.textContent = follow ? "following (new lines appear as they are written)" : "";
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let pending = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        pending += decoder.decode(value, {stream: true});
        const lines = pending.split("\n");
        pending = lines.pop();
        for (const l of lines) if (l) show(JSON.parse(l));
      }
      if (!out.textContent) state.textContent = "no lines (yet): a function logs when it starts and serves";
      else if (follow) state.textContent = "the stream ended; Show starts it again";
      out.dataset.state = "done";
    } catch (e) {
      if (e.name !== "AbortError") state.textContent = String(e.message || e);
    }
  }

  document.getElementById("logs-form").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  load();
})();
