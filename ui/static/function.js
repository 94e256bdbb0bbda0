// One function: live numbers and charts, and the invoke panel for its kind.
"use strict";
(() => {
  const root = document.getElementById("fn");
  const invokeUrl = (path) => `${root.dataset.invoke}?path=${encodeURIComponent(path)}`;

  // --- live numbers and charts -------------------------------------------------------
  const latency = new Charts.Recorder(["p50", "p95"]);
  const replicas = new Charts.Recorder(["wanted", "ready"]);
  const cold = new Charts.Recorder(["cold starts"]);
  AIGC.poll(root.dataset.api, 2000, (data) => {
    const fn = data.function;
    for (const el of root.querySelectorAll("[data-field]")) {
      const v = fn[el.dataset.field];
      el.textContent = el.hasAttribute("data-seconds") ? AIGC.seconds(v) : String(v);
    }
    latency.push(data.time, {p50: fn.recent_p50, p95: fn.recent_p95});
    replicas.push(data.time, {wanted: fn.replicas, ready: fn.available});
    cold.push(data.time, {"cold starts": fn.cold_starts});
    Charts.draw(document.getElementById("chart-latency"), latency.series(), {xLabel: Charts.clock, empty: "no calls yet"});
    Charts.draw(document.getElementById("chart-replicas"), replicas.series(), {xLabel: Charts.clock, integer: true});
    Charts.draw(document.getElementById("chart-cold"), cold.series(), {xLabel: Charts.clock, integer: true});
  });

  const on = (id, handler) => {
    const form = document.getElementById(id);
    if (form) form.addEventListener("submit", (ev) => { ev.preventDefault(); handler(form).catch((e) => AIGC.banner(String(e.message || e))); });
  };
  const errorText = async (resp) => {
    const text = await resp.text();
    try { return JSON.parse(text).error || text; } catch (e) { return text; }
  };

  // --- image: upload, top-k bars ---------------------------------------------------------
  on("image-form", async () => {
    const file = document.getElementById("image-file").files[0];
    const out = document.getElementById("image-result");
    const preview = document.getElementById("image-preview");
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    out.replaceChildren(AIGC.el("p", {class: "muted"}, "classifying…"));
    const k = document.getElementById("image-topk").value || "5";
    const resp = await AIGC.call(invokeUrl(`/?top_k=${encodeURIComponent(k)}`),
                                 {method: "POST", body: file, headers: {"Content-Type": file.type || "application/octet-stream"}});
    if (!resp.ok) { out.replaceChildren(AIGC.el("p", {class: "flash error"}, `${resp.status}: ${await errorText(resp)}`)); return; }
    const body = await resp.json();
    // image-classify answers {"predictions": [{label, index, score}]}; face-emotion {"label", "scores": {label: score}}
    let predictions = body.predictions;
    if (!predictions && body.scores) {
      predictions = Object.entries(body.scores).map(([label, score]) => ({label, score}))
        .sort((a, b) => b.score - a.score).slice(0, Number(k));
    }
    if (!Array.isArray(predictions)) { out.replaceChildren(AIGC.el("pre", {class: "output"}, JSON.stringify(body, null, 2))); return; }
    out.replaceChildren(...predictions.map((p) => {
      const row = AIGC.el("div", {class: "bar-row"});
      if (p.index !== undefined) row.dataset.index = String(p.index);
      row.appendChild(AIGC.el("span", {class: "bar-label"}, p.label));
      const track = AIGC.el("span", {class: "bar-track"});
      const bar = AIGC.el("span", {class: "bar"});
      bar.style.width = `${(100 * p.score).toFixed(1)}%`;
      track.appendChild(bar);
      row.appendChild(track);
      row.appendChild(AIGC.el("span", {class: "bar-value"}, `${(100 * p.score).toFixed(1)}%`));
      return row;
    }));
  });

  // --- embeddings: cosine similarity matrix --------------------------------------------
  on("embed-form", async () => {
    const sentences = document.getElementById("embed-input").value.split("\n").map((s) => s.trim()).filter(Boolean);
    const out = document.getElementById("embed-result");
    out.replaceChildren(AIGC.el("p", {class: "muted"}, "embedding…"));
    const body = await AIGC.json(root.dataset.similarity, {method: "POST", headers: {"Content-Type": "application/json"},
                                                           body: JSON.stringify({sentences, model: root.dataset.model})});
    const table = AIGC.el("table", {class: "matrix", id: "similarity"});
    const head = AIGC.el("tr"); head.appendChild(AIGC.el("th"));
    body.sentences.forEach((_, j) => head.appendChild(AIGC.el("th", {}, `#${j + 1}`)));
    table.appendChild(head);
    body.matrix.forEach((row, i) => {
      const tr = AIGC.el("tr");
      tr.appendChild(AIGC.el("th", {class: "sentence"}, `#${i + 1} ${body.sentences[i]}`));
      row.forEach((v, j) => {
        const td = AIGC.el("td", {"data-i": String(i), "data-j": String(j)}, v.toFixed(3));
        td.style.backgroundColor = `rgba(37, 99, 235, ${Math.max(0, v).toFixed(2)})`;
        if (v > 0.6) td.classList.add("light");
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
    out.replaceChildren(table, AIGC.el("p", {class: "muted"}, `cosine similarity of ${body.dimensions}-dimensional vectors from ${body.model}`));
  });

  // --- text generation: tokens as they stream ---------------------------------------------
  let controller = null;
  const stop = document.getElementById("chat-stop");
  if (stop) stop.addEventListener("click", () => controller && controller.abort());
  on("chat-form", async () => {
    const out = document.getElementById("chat-output");
    const stats = document.getElementById("chat-stats");
    out.textContent = "";
    stats.textContent = "waiting for the first token (a cold start loads the model)…";
    controller = new AbortController();
    stop.disabled = false;
    const started = performance.now();
    let first = null, chunks = 0;
    try {
      const body = {model: document.getElementById("chat-model").value, stream: true,
                    max_tokens: Number(document.getElementById("chat-max").value || 64),
                    temperature: Number(document.getElementById("chat-temperature").value || 0),
                    messages: [{role: "user", content: document.getElementById("chat-prompt").value}]};
      const failed = await AIGC.streamText(invokeUrl("/v1/chat/completions"), body, controller.signal, (text) => {
        if (first === null) first = performance.now();
        chunks += 1;
        out.textContent += text;
      });
      if (failed) { stats.textContent = failed; return; }
      const secs = (performance.now() - started) / 1000;
      stats.textContent = `${chunks} chunks in ${secs.toFixed(2)} s; first after ${first === null ? "—" : ((first - started) / 1000).toFixed(2) + " s"}`;
    } catch (e) {
      stats.textContent = e.name === "AbortError" ? "stopped" : String(e.message || e);
    } finally {
      stop.disabled = true;
      controller = null;
    }
  });

  // --- speech: 16-bit PCM played as each sentence arrives, then kept as a WAV to replay ------------
  const RATE = 24000;
  const wavBlob = (parts, samples) => {
    const header = new DataView(new ArrayBuffer(44));
    const text = (at, s) => [...s].forEach((c, i) => header.setUint8(at + i, c.charCodeAt(0)));
    text(0, "RIFF"); header.setUint32(4, 36 + samples * 2, true); text(8, "WAVEfmt ");
    header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, 1, true);
    header.setUint32(24, RATE, true); header.setUint32(28, RATE * 2, true); header.setUint16(32, 2, true);
    header.setUint16(34, 16, true); text(36, "data"); header.setUint32(40, samples * 2, true);
    return new Blob([header, ...parts], {type: "audio/wav"});
  };
  on("speech-form", async () => {
    const stats = document.getElementById("speech-stats");
    const player = document.getElementById("speech-audio");
    player.hidden = true;
    stats.textContent = "synthesising…";
    const started = performance.now();
    const resp = await AIGC.call(invokeUrl("/v1/audio/speech"), {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({model: root.dataset.model, voice: "heart", response_format: "pcm",
                            input: document.getElementById("speech-input").value,
                            speed: Number(document.getElementById("speech-speed").value || 1)}),
    });
    if (!resp.ok) { stats.textContent = `${resp.status}: ${await errorText(resp)}`; return; }
    const audio = new AudioContext({sampleRate: RATE});
    let at = audio.currentTime + 0.05, first = null, carry = null, samples = 0;
    const parts = [];
    const reader = resp.body.getReader();
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      let bytes = value;
      if (carry) { bytes = new Uint8Array(carry.length + value.length); bytes.set(carry); bytes.set(value, carry.length); }
      const whole = bytes.length - (bytes.length % 2);  // a sample cut between two reads waits for its other byte
      carry = whole < bytes.length ? bytes.slice(whole) : null;
      if (!whole) continue;
      const pcm = new Int16Array(bytes.slice(0, whole).buffer);
      if (first === null) first = performance.now();
      parts.push(pcm);
      samples += pcm.length;
      const buffer = audio.createBuffer(1, pcm.length, RATE);
      buffer.getChannelData(0).set(Float32Array.from(pcm, (v) => v / 32768));
      const source = audio.createBufferSource();
      source.buffer = buffer;
      source.connect(audio.destination);
      at = Math.max(at, audio.currentTime);
      source.start(at);  // each piece starts where the previous ends: gapless while synthesis keeps ahead
      at += buffer.duration;
    }
    player.src = URL.createObjectURL(wavBlob(parts, samples));
    player.hidden = false;
    player.dataset.seconds = (samples / RATE).toFixed(2);
    stats.textContent = `${(samples / RATE).toFixed(2)} s of audio; first audio after ` +
      `${first === null ? "—" : ((first - started) / 1000).toFixed(2) + " s"}, all of it after ${((performance.now() - started) / 1000).toFixed(2)} s`;
  });

  // --- image generation: a grid of PNGs with their seed and parameters ------------------------
  on("images-form", async () => {
    const stats = document.getElementById("images-stats");
    const grid = document.getElementById("images-grid");
    const notice = document.getElementById("images-restrictions");
    stats.textContent = "generating…";
    const seed = document.getElementById("images-seed").value;
    const request = {model: document.getElementById("images-model").value, prompt: document.getElementById("images-prompt").value,
                     n: Number(document.getElementById("images-n").value || 1)};
    if (seed !== "") request.seed = Number(seed);
    const started = performance.now();
    const resp = await AIGC.call(invokeUrl("/v1/images/generations"), {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(request)});
    if (!resp.ok) { stats.textContent = `${resp.status}: ${await errorText(resp)}`; return; }
    const body = await resp.json();
    notice.hidden = !body.restrictions;
    notice.textContent = body.restrictions ? `${body.model}: ${body.restrictions}` : "";
    grid.replaceChildren(...body.data.map((d, i) => {
      const figure = AIGC.el("figure", {class: "generated"});
      figure.appendChild(AIGC.el("img", {src: `data:image/png;base64,${d.b64_json}`, alt: `image ${i + 1}`}));
      const p = (body.parameters || [])[i] || {};
      figure.appendChild(AIGC.el("figcaption", {}, Object.entries(p).map(([k, v]) => `${k} ${v}`).join(" · ")));
      return figure;
    }));
    stats.textContent = `${body.data.length} × ${body.size} from ${body.model} in ${((performance.now() - started) / 1000).toFixed(2)} s; ` +
      `seed ${body.seed}; prompt ${body.prompt}`;
  });

  // --- raw request -----------------------------------------------------------------------
  on("raw-form", async () => {
    const method = document.getElementById("raw-method").value;
    const headers = {"X-Invoke-Method": method};
    const type = document.getElementById("raw-type").value;
    if (type) headers["Content-Type"] = type;
    const started = performance.now();
    const resp = await AIGC.call(invokeUrl(document.getElementById("raw-path").value || "/"), {
      method: "POST", headers, body: method === "GET" || method === "DELETE" ? undefined : document.getElementById("raw-body").value,
    });
    const text = await resp.text();
    document.getElementById("raw-status").textContent =
      `${resp.status} · ${resp.headers.get("Content-Type") || "no content type"} · ${((performance.now() - started) / 1000).toFixed(3)} s`;
    document.getElementById("raw-output").textContent = text;
  });
})();
