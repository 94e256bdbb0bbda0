// Small SVG line charts, drawn by hand so the UI needs no charting package and nothing from the web.
"use strict";
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#dc2626", "#059669", "#9333ea"];
  const W = 360, H = 160, PAD = {l: 44, r: 8, t: 18, b: 22};

  function node(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  }

  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(2));

  // series: [{name, points: [[x, y|null], ...]}]; a null y leaves a gap (no calls in that interval).
  function draw(svg, series, opts = {}) {
    const width = opts.width || W;
    svg.setAttribute("viewBox", `0 0 ${width} ${H}`);
    svg.replaceChildren();
    const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
    if (!all.length) {
      svg.appendChild(node("text", {x: width / 2, y: H / 2, "text-anchor": "middle", class: "empty"}, opts.empty || "no data yet"));
      return;
    }
    const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    let y0 = opts.zero === false ? Math.min(...ys) : Math.min(0, ...ys), y1 = Math.max(...ys);
    if (opts.integer) y1 = Math.max(Math.ceil(y1), y0 + 1);
    if (y1 === y0) y1 = y0 + (Math.abs(y0) || 1);
    const sx = (x) => PAD.l + (x - x0) / (x1 - x0) * (width - PAD.l - PAD.r);
    const sy = (y) => H - PAD.b - (y - y0) / (y1 - y0) * (H - PAD.t - PAD.b);
    svg.appendChild(node("line", {x1: PAD.l, y1: H - PAD.b, x2: width - PAD.r, y2: H - PAD.b, class: "axis"}));
    svg.appendChild(node("line", {x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b, class: "axis"}));
    svg.appendChild(node("text", {x: PAD.l - 4, y: sy(y1) + 4, "text-anchor": "end", class: "tick"}, fmt(y1)));
    svg.appendChild(node("text", {x: PAD.l - 4, y: sy(y0) + 4, "text-anchor": "end", class: "tick"}, fmt(y0)));
    if (opts.xLabel) {
      svg.appendChild(node("text", {x: PAD.l, y: H - 6, class: "tick"}, opts.xLabel(x0)));
      svg.appendChild(node("text", {x: width - PAD.r, y: H - 6, "text-anchor": "end", class: "tick"}, opts.xLabel(x1)));
    }
    series.forEach((s, i) => {
      let d = "", pen = false;
      for (const [x, y] of s.points) {
        if (y === null || y === undefined) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
        pen = true;
      }
      const color = COLORS[i % COLORS.length];
      // later series dashed: equal values (e.g. wanted = ready replicas) would otherwise hide the first line
      const attrs = {d, fill: "none", stroke: color, "stroke-width": 2, class: "series", "data-name": s.name};
      if (i > 0) attrs["stroke-dasharray"] = "5 3";
      svg.appendChild(node("path", attrs));
      const last = s.points.filter((p) => p[1] !== null && p[1] !== undefined).pop();
      if (last) svg.appendChild(node("circle", {cx: sx(last[0]), cy: sy(last[1]), r: 2.5, fill: color}));
      svg.appendChild(node("text", {x: PAD.l + 6 + i * 90, y: 12, fill: color, class: "legend"}, s.name));
    });
  }

  // A rolling window of samples per series, for charts fed by polling.
  class Recorder {
    constructor(names, keep = 150) { this.names = names; this.keep = keep; this.rows = []; }
    push(t, values) { this.rows.push([t, values]); if (this.rows.length > this.keep) this.rows.shift(); }
    series() { return this.names.map((name) => ({name, points: this.rows.map(([t, v]) => [t, v[name]])})); }
  }

  const clock = (t) => new Date(t * 1000).toLocaleTimeString();
  return {draw, Recorder, clock};
})();
