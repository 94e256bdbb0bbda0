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

  document.addEventListener("DOMContentLoaded", () => fillSeconds(document));
  return {call, json, poll, seconds, fillSeconds, el, banner};
})();
