// Shared helpers: fetch with the CSRF header, polling, formatting. No framework, no network beyond this UI.
"use strict";
const AIGC = (() => {
  const token = () => document.querySelector('meta[name="csrf-token"]').content;
  const banner = (text) => {
    const el = document.getElementById("banner");
    el.textContent = text || "";
    el.hidden = !text;
  };

  // Every call the pages make: same origin, CSRF header, and the two answers that need the whole page
  // (not logged in → the login page; gateway down → a banner saying so).
  async function call(url, options = {}) {
    const headers = Object.assign({"X-CSRF-Token": token(), "X-Requested-With": "fetch"}, options.headers || {});
    const resp = await fetch(url, Object.assign({}, options, {headers, credentials: "same-origin"}));
    if (resp.status === 401 && !resp.headers.get("X-Function-Status")) {
      const body = await resp.json().catch(() => ({}));
      window.location.assign(body.login || "/login");
      throw new Error("not logged in");
    }
    return resp;
  }

  async function json(url, options) {
    const resp = await call(url, options);
    const body = await resp.json().catch(() => ({error: `HTTP ${resp.status}: not JSON`}));
    if (!resp.ok) {
      banner(body.error || `HTTP ${resp.status}`);
      throw new Error(body.error || `HTTP ${resp.status}`);
    }
    banner("");
    return body;
  }

  // Poll while the page is open; a failed poll shows the banner and the next one tries again.
  function poll(url, every, onData) {
    const tick = async () => {
      try { onData(await json(url)); } catch (e) { /* banner already says why */ }
      setTimeout(tick, every);
    };
    tick();
  }

  function seconds(value) {
    if (value === null || value === undefined || value === "") return "—";
    const v = Number(value);
    return v < 1 ? `${(v * 1000).toFixed(v < 0.01 ? 1 : 0)} ms` : `${v.toFixed(2)} s`;
  }

  function fillSeconds(root) {
    root.querySelectorAll("[data-seconds]").forEach((el) => { el.textContent = seconds(el.dataset.seconds); });
  }

  // Elements are built with textContent only: data from functions never becomes markup.
  function el(tag, attrs = {}, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // An OpenAI completion or chat completion with `stream: true` through the UI's proxy: `onText` gets each
  // piece of text (`text`, or a chat `delta.content`) as its server-sent event arrives. Resolves to null
  // when the stream ended, or to "STATUS: message".
  async function streamText(url, body, signal, onText) {
    const resp = await call(url, {method: "POST", signal, body: JSON.stringify(body),
                                  headers: {"Content-Type": "application/json", Accept: "text/event-stream"}});
    if (!resp.ok) {
      const text = await resp.text();
      let message = text;
      try { message = JSON.parse(text).error || text; } catch (e) { /* not JSON: the text as it is */ }
      return `${resp.status}: ${message}`;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return null;
      pending += decoder.decode(value, {stream: true});
      const events = pending.split("\n\n");
      pending = events.pop();  // an event cut in half waits for the rest
      for (const ev of events) {
        const data = ev.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
        if (!data || data === "[DONE]") continue;
        const parsed = JSON.parse(data);
        if (parsed.error) return `error: ${parsed.error.message || JSON.stringify(parsed.error)}`;
        const choice = (parsed.choices || [])[0] || {};
        const text = choice.text !== undefined ? choice.text : (choice.delta || {}).content;
        if (text) onText(text);
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => fillSeconds(document));
  return {call, json, poll, seconds, fillSeconds, el, banner, streamText};
})();
