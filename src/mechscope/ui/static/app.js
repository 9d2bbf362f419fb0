// mechscope explorer: plain JS, no dependencies, no build step.
// Every piece of data reaches the page through textContent, text nodes or attributes set with setAttribute, never
// as markup, so text from prompts, corpora and results cannot become elements (and the server's
// Content-Security-Policy forbids inline script anyway).
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  setProps(e, props);
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function svg(tag, props = {}, ...children) {
  const e = document.createElementNS(SVGNS, tag);
  setProps(e, props);
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function setProps(e, props) {
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === "text") e.textContent = v;
    else if (k === "class") e.setAttribute("class", v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  let data;
  try { data = await response.json(); } catch (e) { throw new Error(`${response.status} ${response.statusText}`); }
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function showError(target, err) {
  target.replaceChildren(el("p", { class: "error", role: "alert", text: String(err && err.message || err) }));
}

const fmt = (x, digits = 3) => {
  if (x === null || x === undefined) return "–";
  const text = Number(x).toFixed(digits);
  return Number(text) === 0 ? (0).toFixed(digits) : text;  // no "-0.000"
};
const visible = (t) => t.replace(/ /g, "·").replace(/\n/g, "↵");

// --- tooltip -------------------------------------------------------------------------------------------------------

const tip = () => $("tip");

function showTip(event, lines) {
  const t = tip();
  t.replaceChildren(...lines.map((line) => el("div", { text: line })));
  t.hidden = false;
  t.style.left = `${event.pageX + 12}px`;
  t.style.top = `${event.pageY + 12}px`;
}

function hideTip() { tip().hidden = true; }

function hoverTip(node, lines) {
  node.addEventListener("mousemove", (e) => showTip(e, lines()));
  node.addEventListener("mouseleave", hideTip);
}

// --- colours -------------------------------------------------------------------------------------------------------

function blue(p) { return `rgba(37, 99, 235, ${Math.max(0, Math.min(1, p)).toFixed(3)})`; }
function signed(v, max) {
  const a = max > 0 ? Math.min(1, Math.abs(v) / max) : 0;
  return v >= 0 ? `rgba(37, 99, 235, ${a.toFixed(3)})` : `rgba(220, 38, 38, ${a.toFixed(3)})`;
}

// --- status and routing --------------------------------------------------------------------------------------------

const state = { model: null, loaded: {}, runs: null };

async function loadStatus() {
  try {
    const s = await api("/api/status");
    state.model = s.model;
    state.dictionary = s.dictionary;
    const m = s.model ? `${s.model.name} (${s.model.n_layers} layers × ${s.model.n_heads} heads)` : "no model";
    $("status").textContent = `${m} · worker: ${s.worker.done} done, ${s.worker.queued} queued`;
    const layer = $("att-layer");
    if (s.model && layer.options.length === 0) {
      for (let l = 0; l < s.model.n_layers; l++) layer.append(el("option", { value: l, text: String(l) }));
      layer.append(el("option", { value: "all", text: "all layers" }));
    }
  } catch (err) { $("status").textContent = String(err.message); }
}

async function runs() {
  if (state.runs === null) state.runs = (await api("/api/runs")).found;
  return state.runs;
}

const VIEWS = { lab: null, circuits: openCircuits, graphs: openGraphs, vision: openVision, bench: openBench,
  features: openFeatures, api: openApi };

function route() {
  const name = (location.hash || "#lab").slice(1);
  const view = name in VIEWS ? name : "lab";
  for (const v of Object.keys(VIEWS)) $(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  if (VIEWS[view] && !state.loaded[view]) {
    state.loaded[view] = true;
    VIEWS[view]();
  }
}

// --- prompt lab ----------------------------------------------------------------------------------------------------

let lastPrompt = null;

async function runPrompt(event) {
  if (event) event.preventDefault();
  const prompt = $("prompt").value;
  const topK = Number($("topk").value) || 10;
  lastPrompt = prompt;
  $("lab-error").replaceChildren();
  $("lab-busy").textContent = "running…";
  try {
    const p = await api("/api/prompt", { prompt, top_k: topK });
    drawTokens(p.tokens);
    drawPredictions(p.predictions);
    const [lens, att] = await Promise.all([
      api("/api/lens", { prompt, top_k: 5 }),
      api("/api/attention", { prompt, layer: $("att-layer").value === "all" ? 0 : Number($("att-layer").value || 0) }),
    ]);
    drawLens(lens);
    if ($("att-layer").value === "all") loadAttention(); else drawHeads(att);
    $("lab-busy").textContent = "";
  } catch (err) {
    $("lab-busy").textContent = "";
    showError($("lab-error"), err);
  }
  loadStatus();
}

function drawTokens(tokens) {
  $("tokens").replaceChildren(...tokens.map((t, i) => el("span", { class: "tok", title: `position ${i}, id ${t.id}`,
    text: visible(t.text) })));
}

function drawPredictions(preds) {
  const rows = preds.map((p, i) => el("tr", { class: i === 0 ? "top" : "" },
    el("td", { class: "rank", text: String(i + 1) }),
    el("td", {}, el("code", { class: "pred-token", text: visible(p.token) })),
    el("td", { class: "num", text: fmt(p.prob) }),
    el("td", {}, bar(p.prob))));
  $("predictions").replaceChildren(el("tbody", {}, ...rows));
}

function bar(p) {
  const b = el("div", { class: "bar" });
  b.style.width = `${Math.round(Math.max(0, Math.min(1, p)) * 120)}px`;
  return b;
}

function drawLens(lens) {
  // With the server's tuned lens (serve --tuned-lens DIR), its grid follows on the same layer x position axes.
  const grids = [["logit lens", lens]];
  if (lens.tuned) grids.push([`tuned lens (${lensSource(lens.tuned.lens)})`, lens.tuned]);
  $("lens").replaceChildren(...grids.flatMap(([title, grid]) => [
    ...(grids.length > 1 ? [el("div", { class: "dim lens-title", text: title })] : []),
    lensTable(grid, title)]));
}

function lensSource(prov) {
  if (!prov) return "";
  const parts = [];
  if (prov.tokens) parts.push(`${Number(prov.tokens).toLocaleString()} tokens`);
  if (prov.corpus) parts.push(String(prov.corpus));
  return parts.join(", ") || String(prov.source || "");
}

function lensTable(lens, title) {
  const table = el("table", { class: "lens", "data-lens": title.split(" ")[0] });
  table.append(el("thead", {}, el("tr", {}, el("th", { text: "layer" }),
    ...lens.tokens.map((t) => el("th", { class: "tokhead", text: visible(t) })))));
  const body = el("tbody");
  for (let l = lens.layers.length - 1; l >= 0; l--) {
    const row = el("tr", {}, el("th", { text: String(lens.layers[l]) }));
    lens.top[l].forEach((cell, pos) => {
      const td = el("td", { class: "cell", "data-layer": l, "data-pos": pos, text: visible(cell[0].token) });
      td.style.backgroundColor = blue(cell[0].prob);
      if (cell[0].prob > 0.55) td.classList.add("light");
      hoverTip(td, () => [`${title}, layer ${l}, after ${JSON.stringify(lens.tokens[pos])}`,
        ...cell.map((c) => `${JSON.stringify(c.token)}  ${fmt(c.prob)}`)]);
      row.append(td);
    });
    body.append(row);
  }
  table.append(body);
  return table;
}

async function loadAttention() {
  if (lastPrompt === null) return;
  try {
    if ($("att-layer").value !== "all") {
      drawHeads(await api("/api/attention", { prompt: lastPrompt, layer: Number($("att-layer").value) }));
      return;
    }
    $("heads").replaceChildren();  // every layer's heads, one row per layer (one request each, in turn)
    $("pattern").replaceChildren();
    for (let l = 0; l < state.model.n_layers; l++) {
      drawHeads(await api("/api/attention", { prompt: lastPrompt, layer: l }), true);
    }
  } catch (err) { showError($("lab-error"), err); }
}

function drawHeads(att, append = false) {
  const n = att.tokens.length;
  const size = 72;
  const heads = att.patterns.map((pattern, h) => {
    const canvas = el("canvas", { width: size, height: size, class: "thumb", title: `head ${att.layer}.${h}` });
    const ctx = canvas.getContext("2d");
    const cell = size / n;
    pattern.forEach((row, q) => row.forEach((w, k) => {
      ctx.fillStyle = blue(w);
      ctx.fillRect(k * cell, q * cell, Math.ceil(cell), Math.ceil(cell));
    }));
    return el("button", { class: "head", type: "button", "data-head": h, "data-layer": att.layer,
      onclick: () => drawPattern(att, h) }, canvas, el("div", { text: `${att.layer}.${h}` }));
  });
  if (append) {
    $("heads").append(el("div", { class: "head-row" }, el("span", { class: "dim", text: `layer ${att.layer}` }),
      ...heads));
  } else {
    $("heads").replaceChildren(...heads);
    $("pattern").replaceChildren();
  }
}

function drawPattern(att, h) {
  const pattern = att.patterns[h];
  const n = att.tokens.length;
  const cell = Math.max(10, Math.min(22, Math.floor(480 / n)));
  const label = 110;
  const s = svg("svg", { width: label + n * cell, height: label + n * cell, class: "pattern", id: "pattern-svg",
    "data-head": h });
  att.tokens.forEach((t, i) => {
    s.append(svg("text", { x: label - 4, y: label + i * cell + cell * 0.7, "text-anchor": "end", class: "axis" },
      visible(t)));
    s.append(svg("text", { x: 0, y: 0, class: "axis", transform:
      `translate(${label + i * cell + cell * 0.7}, ${label - 4}) rotate(-60)` }, visible(t)));
  });
  pattern.forEach((row, q) => row.forEach((w, k) => {
    if (k > q) return;  // causal: a query never sees later keys
    const r = svg("rect", { x: label + k * cell, y: label + q * cell, width: cell - 1, height: cell - 1,
      fill: blue(w), class: "att", "data-q": q, "data-k": k });
    hoverTip(r, () => [`${JSON.stringify(att.tokens[q])} → ${JSON.stringify(att.tokens[k])}`, `weight ${fmt(w)}`]);
    s.append(r);
  }));
  // circuitsvis-style token view: hover a token (query) to colour the tokens it attends to
  const toks = el("div", { class: "tokens attn-tokens" });
  const spans = att.tokens.map((t, q) => el("span", { class: "tok", text: visible(t) }));
  spans.forEach((span, q) => {
    span.addEventListener("mouseenter", () => {
      spans.forEach((other, k) => { other.style.backgroundColor = k <= q ? blue(pattern[q][k]) : ""; });
      span.classList.add("query");
    });
    span.addEventListener("mouseleave", () => {
      spans.forEach((other) => { other.style.backgroundColor = ""; });
      span.classList.remove("query");
    });
  });
  toks.append(...spans);
  $("pattern").replaceChildren(el("h3", { text: `head ${att.layer}.${h}: query (row) → key (column)` }), toks, s);
}

async function runDLA(event) {
  event.preventDefault();
  const prompt = $("prompt").value;
  try {
    const d = await api("/api/dla", { prompt, answer: $("dla-answer").value, wrong: $("dla-wrong").value });
    drawDLA(d);
  } catch (err) { showError($("dla"), err); }
}

function drawDLA(d) {
  const layers = d.heads.length;
  const nHeads = layers ? d.heads[0].length : 0;
  const values = [...d.heads.flat(), ...d.mlps];
  const max = Math.max(1e-9, ...values.map(Math.abs));
  const cell = 26;
  const left = 60;
  const s = svg("svg", { width: left + (nHeads + 2) * cell, height: 24 + layers * cell, class: "dla" });
  for (let h = 0; h < nHeads; h++) {
    s.append(svg("text", { x: left + h * cell + cell / 2, y: 14, "text-anchor": "middle", class: "axis" }, `h${h}`));
  }
  s.append(svg("text", { x: left + (nHeads + 1) * cell + cell / 2, y: 14, "text-anchor": "middle", class: "axis" },
    "MLP"));
  for (let l = 0; l < layers; l++) {
    const y = 20 + l * cell;
    s.append(svg("text", { x: left - 6, y: y + cell * 0.65, "text-anchor": "end", class: "axis" }, `layer ${l}`));
    d.heads[l].forEach((v, h) => {
      const r = svg("rect", { x: left + h * cell, y, width: cell - 2, height: cell - 2, fill: signed(v, max),
        class: "dla-head", "data-value": v });
      hoverTip(r, () => [`head ${l}.${h}`, `${fmt(v)} logit difference`]);
      s.append(r);
    });
    const m = svg("rect", { x: left + (nHeads + 1) * cell, y, width: cell - 2, height: cell - 2,
      fill: signed(d.mlps[l], max), class: "dla-mlp" });
    hoverTip(m, () => [`MLP ${l}`, `${fmt(d.mlps[l])} logit difference`]);
    s.append(m);
  }
  const summary = el("p", { text: `logit difference ${JSON.stringify(d.answer)} − ${JSON.stringify(d.wrong)}: ` +
    `${fmt(d.logit_diff)} (sum of parts ${fmt(d.total)}: embedding ${fmt(d.embed)}, biases ${fmt(d.bias)}). ` +
    "Blue pushes toward the answer, red toward the alternative." });
  $("dla").replaceChildren(summary, s);
}

async function runAttribution(event) {
  event.preventDefault();
  const box = $("attribution");
  box.replaceChildren(el("p", { class: "dim", text: "attributing…" }));
  try {
    const continuation = $("attr-continuation").value;
    const a = await api("/api/tokens/attribute", { prompt: $("prompt").value, method: $("attr-method").value,
      ...(continuation ? { continuation } : {}) });
    const rows = a.scores.map((row, i) => {
      const max = Math.max(1e-9, ...row.map(Math.abs));
      const line = el("div", { class: "context attr-row" },
        el("span", { class: "act", text: visible(a.tokens[a.n_prompt + i]) }));
      row.slice(0, a.n_prompt + i).forEach((v, j) => {
        const span = el("span", { class: "tok attr-tok", title: `attribution ${fmt(v)}`, text: visible(a.tokens[j]) });
        span.style.backgroundColor = signed(v, max);
        line.append(span);
      });
      return line;
    });
    const gap = a.completeness_gap ? ` Completeness gap per token: ${a.completeness_gap.map((g) => fmt(g)).join(", ")}` +
      ` (output change ${a.output_change.map((g) => fmt(g)).join(", ")}).` : "";
    box.replaceChildren(el("p", { class: "dim", text: `${a.method}: each row is a new token; blue tokens raise its ` +
      `logit, red lower it.${gap}` }), ...rows);
  } catch (err) { showError(box, err); }
}

// --- circuits ------------------------------------------------------------------------------------------------------

async function openCircuits() {
  try {
    const methods = (await api("/api/methods")).families.circuits.methods;  // every declared circuit method
    $("run-method").replaceChildren(...methods.map((m) => el("option", { value: m.name, title: m.summary,
      text: m.name })));
  } catch (err) { showError($("circuit-error"), err); }
  await listCircuits();
}

// A button that cancels the model jobs whose names start with `prefix` (queued or already running).
function cancelButton(prefix) {
  return el("button", { type: "button", class: "cancel", onclick: async () => {
    try {
      const jobs = (await api("/api/status")).worker.jobs.filter((j) => j.name.startsWith(prefix));
      for (const j of jobs) await api("/api/jobs/cancel", { id: j.id });
    } catch (err) { $("status").textContent = String(err.message); }
  } }, "cancel");
}

async function runCircuit(event) {
  event.preventDefault();
  $("run-busy").replaceChildren("running (the faithfulness curve takes a while)… ", cancelButton("circuit"));
  $("circuit-error").replaceChildren();
  try {
    const c = await api("/api/circuit/run", { task: $("run-task").value, method: $("run-method").value,
      n: Number($("run-n").value) });
    state.runs = null;
    await listCircuits();
    drawCircuit(c);
  } catch (err) { showError($("circuit-error"), err); }
  $("run-busy").replaceChildren();
}

async function listCircuits() {
  try {
    const found = (await runs()).filter((f) => f.kind === "circuit");
    if (!found.length) {
      $("circuit-list").replaceChildren(el("p", { class: "dim",
        text: "No circuit runs under the run directories (mechscope circuit --out DIR writes one)." }));
      return;
    }
    $("circuit-list").replaceChildren(...found.map((f) => el("button", { type: "button", class: "item",
      "data-ref": f.ref, text: f.title, onclick: () => openCircuit(f.ref) })));
  } catch (err) { showError($("circuit-error"), err); }
}

async function openCircuit(ref) {
  try {
    drawCircuit({ ...(await api(`/api/circuit?ref=${encodeURIComponent(ref)}`)), ref });
  } catch (err) { showError($("circuit-error"), err); }
}

function drawCircuit(c) {
  const box = $("circuit");
  const info = el("p", { text: `${c.method} on ${c.task} (${c.n_prompts} prompt pairs, model ` +
    `${c.model.model || "?"}): circuit of ${c.n_edges} of ${c.of_edges} edges, faithfulness ${fmt(c.faithfulness)}; ` +
    `random circuits of the same size: ${c.random_faithfulness.map((x) => fmt(x)).join(", ") || "none"}.` });
  const sizeLabel = el("span", { id: "size-label" });
  const slider = el("input", { type: "range", id: "size", min: 0, step: 1 });
  const graph = el("div", { id: "graph", class: "scroll" });
  const edgeInfo = el("div", { id: "edge-info", class: "edge-info" },
    el("p", { class: "dim", text: "Click an edge to see its score." }));
  const points = c.curve
    ? c.curve.n_edges.map((n, i) => ({ n, f: c.curve.faithfulness[i], r: c.curve.random_mean[i],
      size: c.curve.sizes[i] }))
    : [{ n: c.n_edges, f: c.faithfulness, r: mean(c.random_faithfulness), size: c.n_edges / c.of_edges }];
  slider.max = String(points.length - 1);
  let start = 0;
  points.forEach((p, i) => { if (Math.abs(p.n - c.n_edges) < Math.abs(points[start].n - c.n_edges)) start = i; });
  slider.value = String(start);
  const update = () => {
    const p = points[Number(slider.value)];
    const shown = Math.min(p.n, c.edges.length);
    sizeLabel.textContent = `${p.n} edges (${fmt(100 * p.size, 1)}% of the graph): faithfulness ${fmt(p.f)}, ` +
      `random circuits ${fmt(p.r)}` + (shown < p.n ? ` — the run saved scores for ${c.edges.length} edges, ` +
      `${shown} drawn` : "");
    graph.replaceChildren(circuitSvg(c, c.edges.slice(0, shown), edgeInfo));
  };
  slider.addEventListener("input", update);
  box.replaceChildren(info, el("div", { class: "row" }, el("label", { for: "size", text: "size " }), slider,
    sizeLabel), el("div", { class: "columns" }, graph, edgeInfo));
  update();
}

async function verifyEdge(ref, edge) {
  const out = $("verify-result");
  out.replaceChildren(el("p", { class: "dim", text: "patching…" }));
  try {
    const v = await api("/api/circuit/verify", { ref, edge });
    out.replaceChildren(el("p", { id: "verify-actual", text: `patched for real: effect ${fmt(v.actual)}` }),
      el("p", { text: `its score's estimate: ${fmt(v.estimate)} (1 = clean, 0 = corrupt; ${v.direction})` }));
  } catch (err) { showError(out, err); }
}

function mean(xs) { return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null; }

function circuitSvg(c, edges, edgeInfo) {
  const rows = Math.max(...c.nodes.map((n) => n.row)) + 1;
  const widest = Math.max(...c.nodes.map((n) => n.cols));
  const width = Math.max(320, widest * 64 + 40);
  const rowH = 64;
  const height = rows * rowH + 20;
  const pos = {};
  for (const n of c.nodes) {
    pos[n.id] = { x: (width * (n.col + 0.5)) / n.cols, y: height - 30 - n.row * rowH };
  }
  const s = svg("svg", { width, height, class: "circuit", id: "circuit-svg" });
  const max = Math.max(1e-12, ...edges.map((e) => Math.abs(e.score || 0)));
  edges.forEach((e, rank) => {
    const a = pos[e.sender];
    const b = pos[e.receiver];
    if (!a || !b) return;
    const w = 1 + 7 * Math.abs(e.score || 0) / max;
    // a head's q, k and v inputs bend apart, so three edges between the same nodes stay three clickable lines
    const bend = { q: -18, k: 0, v: 18 }[e.part] || 0;
    const mx = (a.x + b.x) / 2 + bend;
    const my = (a.y + b.y) / 2;
    const line = svg("path", { d: `M ${a.x} ${a.y} Q ${mx} ${my} ${b.x} ${b.y}`, fill: "none",
      "stroke-width": w.toFixed(2), stroke: (e.score || 0) >= 0 ? "#2563eb" : "#dc2626", class: "edge",
      "data-edge": e.name });
    line.addEventListener("click", () => {
      for (const other of s.querySelectorAll(".edge.selected")) other.classList.remove("selected");
      line.classList.add("selected");
      edgeInfo.replaceChildren(el("h3", { text: e.name }),
        el("p", { id: "edge-score", text: `score ${e.score === null ? "not saved" : Number(e.score).toPrecision(4)}` }),
        el("p", { text: `rank ${rank + 1} of ${c.edges.length} saved scores by |score|` }),
        el("p", { text: e.in_circuit ? "in the saved circuit" : "not in the saved circuit" }),
        el("p", { class: "dim", text: `reads ${e.sender} into ${e.receiver}${e.part ? ` (${e.part} input)` : ""}` }),
        el("button", { type: "button", id: "verify", onclick: () => verifyEdge(c.ref, e.name) }, "verify by patching"),
        el("div", { id: "verify-result" }));
    });
    hoverTip(line, () => [e.name, `score ${e.score === null ? "–" : Number(e.score).toPrecision(4)}`]);
    s.append(line);
  });
  for (const n of c.nodes) {
    const p = pos[n.id];
    s.append(svg("circle", { cx: p.x, cy: p.y, r: 11, class: "node", "data-node": n.id }));
    s.append(svg("text", { x: p.x, y: p.y + 4, "text-anchor": "middle", class: "node-label" }, n.id));
  }
  return s;
}

// --- bench ---------------------------------------------------------------------------------------------------------

async function openBench() {
  try {
    const found = (await runs()).filter((f) => f.kind === "leaderboard");
    if (!found.length) {
      $("bench-list").replaceChildren(el("p", { class: "dim",
        text: "No leaderboard under the run directories (give the folder of docs/leaderboard.json)." }));
      return;
    }
    $("bench-list").replaceChildren(...found.map((f) => el("button", { type: "button", class: "item",
      "data-ref": f.ref, text: f.title, onclick: () => openLeaderboard(f.ref) })));
    openLeaderboard(found[0].ref);
  } catch (err) { showError($("bench-error"), err); }
}

async function openLeaderboard(ref) {
  try {
    const b = await api(`/api/bench?ref=${encodeURIComponent(ref)}`);
    const select = (id, label, options) => el("label", {}, `${label} `, el("select", { id, onchange: () => drawBench(b) },
      el("option", { value: "", text: "all" }), ...options.map((o) => el("option", { value: o, text: o }))));
    $("bench-filters").replaceChildren(select("f-family", "family", b.families),
      select("f-organism", "organism", b.organisms), select("f-method", "method", b.methods),
      el("label", {}, el("input", { type: "checkbox", id: "f-baselines", checked: "", onchange: () => drawBench(b) }),
        " baselines"));
    drawBench(b);
  } catch (err) { showError($("bench-error"), err); }
}

function drawBench(b) {
  const want = (id, value) => !$(id).value || $(id).value === value;
  const baselines = $("f-baselines").checked;
  const rows = b.rows.filter((r) => want("f-family", r.family) && want("f-organism", r.organism) &&
    want("f-method", r.method) && (baselines || !r.baseline));
  const head = el("tr", {}, ...["family", "organism", "method", "metric", "score", "chance", "baselines", ""]
    .map((h) => el("th", { text: h })));
  const body = rows.map((r) => el("tr", { class: r.baseline ? "baseline bench-row" : "bench-row" },
    el("td", { text: r.family }), el("td", { text: r.organism }), el("td", { text: r.method }),
    el("td", { text: `${r.metric} ${r.higher_is_better ? "↑" : "↓"}` }),
    el("td", { class: "num", text: `${fmt(r.mean)}${r.n > 1 ? ` ± ${fmt(r.std)} (n=${r.n})` : ""}` }),
    el("td", { class: "num chance", text: fmt(r.chance) }),
    el("td", { class: "dim", text: Object.entries(r.baselines || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") }),
    el("td", {}, scoreBar(r))));
  $("bench").replaceChildren(el("p", { class: "dim", id: "bench-count", text: `${rows.length} of ${b.rows.length} rows` }),
    el("table", { class: "bench" }, el("thead", {}, head), el("tbody", {}, ...body)));
}

function scoreBar(r) {
  const values = [r.mean, r.chance, ...Object.values(r.baselines || {})].filter((v) => typeof v === "number");
  const lo = Math.min(0, ...values);
  const hi = Math.max(1, ...values);
  const x = (v) => 4 + (112 * (v - lo)) / (hi - lo || 1);
  const s = svg("svg", { width: 120, height: 16, class: "scorebar" });
  s.append(svg("rect", { x: x(lo), y: 5, width: x(r.mean) - x(lo), height: 6, class: "score" }));
  if (typeof r.chance === "number") s.append(svg("line", { x1: x(r.chance), x2: x(r.chance), y1: 1, y2: 15,
    class: "chance-mark" }, svg("title", {}, `chance ${fmt(r.chance)}`)));
  for (const [k, v] of Object.entries(r.baselines || {})) {
    s.append(svg("line", { x1: x(v), x2: x(v), y1: 3, y2: 13, class: `baseline-mark ${k === "oracle" ? "oracle" : ""}` },
      svg("title", {}, `${k} ${fmt(v)}`)));
  }
  return s;
}

// --- features ------------------------------------------------------------------------------------------------------

let featureRef = null;

async function openFeatures() {
  try {
    const found = (await runs()).filter((f) => f.kind === "features");
    if (!found.length) {
      $("feature-list").replaceChildren(el("p", { class: "dim",
        text: "No feature database under the run directories (mechscope features build writes one)." }));
      return;
    }
    $("feature-list").replaceChildren(...found.map((f) => el("button", { type: "button", class: "item",
      "data-ref": f.ref, text: f.title, onclick: () => openDatabase(f.ref) })));
    openDatabase(found[0].ref);
  } catch (err) { showError($("feature-error"), err); }
}

async function openDatabase(ref) {
  featureRef = ref;
  $("feature-search").hidden = false;
  try {
    const d = await api(`/api/features?ref=${encodeURIComponent(ref)}&by=frequency&n=100`);
    $("latents").replaceChildren(el("p", { class: "dim", text: `${d.n_latents} latents at ${d.site}; most frequent:` }),
      ...d.latents.map((l) => latentButton(l.latent, `freq ${fmt(l.frequency, 4)}`)));
  } catch (err) { showError($("feature-error"), err); }
}

function latentButton(latent, note) {
  return el("button", { type: "button", class: "item latent", "data-latent": latent, onclick: () => openLatent(latent) },
    `#${latent} `, el("span", { class: "dim", text: note }));
}

async function openLatent(latent) {
  try {
    drawLatent(await api(`/api/feature?ref=${encodeURIComponent(featureRef)}&latent=${latent}`));
  } catch (err) { showError($("feature"), err); }
}

async function searchToken() {
  try {
    const token = $("feature-token").value;
    const d = await api(`/api/features/search?ref=${encodeURIComponent(featureRef)}&text=${encodeURIComponent(token)}`);
    $("latents").replaceChildren(el("p", { class: "dim", text: `latents promoting ${JSON.stringify(token)}:` }),
      ...d.matches.map((m) => latentButton(m.latent, `effect ${fmt(m.effect)}`)));
  } catch (err) { showError($("feature-error"), err); }
}

async function searchExplanations() {
  try {
    const words = $("feature-words").value;
    const d = await api(`/api/features/search?ref=${encodeURIComponent(featureRef)}&by=explanation&` +
      `text=${encodeURIComponent(words)}`);
    $("latents").replaceChildren(el("p", { class: "dim", text: `explanations with ${JSON.stringify(words)}:` }),
      ...(d.matches.length ? d.matches.map((m) => el("div", { class: "explained" },
        latentButton(m.latent, m.score === null ? m.explainer : `${m.scorer || "score"} ${fmt(m.score)}`),
        el("span", { class: "explanation-text", text: m.text }))) :
        [el("p", { class: "dim", text: "none (the database holds explanations once latents are explained)" })]));
  } catch (err) { showError($("feature-error"), err); }
}

function explanationList(list) {
  if (!list || !list.length) return el("p", { class: "dim", text: "no explanations in the database" });
  return el("table", { id: "explanations" }, el("tbody", {}, ...list.map((e) => el("tr", {},
    el("td", { class: "explanation-text", text: e.text }), el("td", { class: "dim", text: e.explainer }),
    el("td", { class: "num", text: e.score === null ? "not scored" : `${e.scorer || "score"} ${fmt(e.score)}` })))));
}

function drawLatent(f) {
  const context = (e) => {
    const peak = Math.max(1e-9, f.max_activation);
    const line = el("div", { class: "context" }, el("span", { class: "act num", text: fmt(e.activation) }));
    e.activations.forEach((a, i) => {
      const text = e.tokens ? e.tokens[i] : `[${e.token_ids[i]}]`;
      const span = el("span", { class: "tok ctx-tok", title: `activation ${fmt(a)}`, text: visible(text) });
      if (a > 0) span.style.backgroundColor = `rgba(234, 88, 12, ${Math.min(1, a / peak).toFixed(3)})`;
      line.append(span);
    });
    return line;
  };
  const effects = (label, list) => el("p", {}, el("b", { text: `${label}: ` }),
    list.map((t) => `${JSON.stringify(t.token ?? t.token_id)} ${fmt(t.effect)}`).join(", ") || "–");
  $("feature").replaceChildren(
    el("h3", { text: `latent ${f.latent}` }),
    el("p", { text: `fires on ${fmt(100 * f.frequency, 3)}% of tokens (${f.n_active}); mean ${fmt(f.mean_activation)}, ` +
      `max ${fmt(f.max_activation)}` }),
    el("h3", { text: "explanations" }), explanationList(f.explanations),
    histogram(f.hist_edges, f.hist_counts),
    effects("promotes", f.promoted), effects("suppresses", f.suppressed),
    el("h3", { text: "top contexts" }), el("div", { id: "contexts" }, ...f.top_examples.map(context)),
    ...(state.dictionary ? featureLab(f.latent) : [el("p", { class: "dim",
      text: "Start the server with --dictionary DIR to try this feature on your own text and steer with it." })]));
}

function featureLab(latent) {
  const text = el("input", { id: "try-text", size: 50, value: "the cat sat on the mat" });
  const tryOut = el("div", { id: "try-out", class: "tokens" });
  const tryIt = async () => {
    try {
      const t = await api("/api/feature/try", { text: text.value, latent });
      const peak = Math.max(1e-9, ...t.activations);
      tryOut.replaceChildren(...t.tokens.map((tok, i) => {
        const span = el("span", { class: "tok try-tok", title: `activation ${fmt(t.activations[i])}`,
          text: visible(tok) });
        if (t.activations[i] > 0) span.style.backgroundColor = `rgba(234, 88, 12, ${(t.activations[i] / peak).toFixed(3)})`;
        return span;
      }));
    } catch (err) { showError(tryOut, err); }
  };
  const prompt = el("input", { id: "steer-prompt", size: 40, value: "the dog" });
  const how = el("select", { id: "steer-how" }, el("option", { value: "clamp", text: "clamp to" }),
    el("option", { value: "scale", text: "scale by" }));
  const value = el("input", { id: "steer-value", type: "number", step: "any", value: "20" });
  const steerOut = el("div", { id: "steer-out" });
  const steerIt = async () => {
    steerOut.replaceChildren(el("p", { class: "dim", text: "generating…" }));
    try {
      const s = await api("/api/feature/steer", { prompt: prompt.value, latent, how: how.value,
        value: Number(value.value), max_new_tokens: 20 });
      steerOut.replaceChildren(el("div", { class: "columns" },
        el("div", {}, el("h4", { text: "without" }), el("pre", { id: "steer-plain", text: s.plain })),
        el("div", {}, el("h4", { text: s.intervention }), el("pre", { id: "steer-steered", text: s.steered }))));
    } catch (err) { showError(steerOut, err); }
  };
  return [el("h3", { text: "try it" }), el("div", { class: "row" }, text,
    el("button", { type: "button", id: "try-go", onclick: tryIt }, "run")), tryOut,
  el("h3", { text: "steer" }), el("div", { class: "row" }, prompt, how, value,
    el("button", { type: "button", id: "steer-go", onclick: steerIt }, "generate")), steerOut];
}

function histogram(edges, counts) {
  const s = svg("svg", { width: 320, height: 70, class: "hist" });
  const max = Math.max(1, ...counts);
  const w = 300 / Math.max(1, counts.length);
  counts.forEach((c, i) => {
    const h = (60 * c) / max;
    s.append(svg("rect", { x: 10 + i * w, y: 62 - h, width: Math.max(1, w - 1), height: h, class: "histbar" },
      svg("title", {}, `${fmt(edges[i])}–${fmt(edges[i + 1])}: ${c}`)));
  });
  return s;
}

// --- attribution graphs --------------------------------------------------------------------------------------------

// The graph held by the view: its reference, the thresholds, the pruned nodes and edges the server kept, the node
// open in the side panel and the nodes picked for a supernode.
const agraph = { ref: null, data: null, open: null, picked: new Set(), fields: [] };

async function openGraphs() {
  try {
    const g = await api("/api/graphs");
    agraph.fields = g.method.fields;
    $("graph-settings").replaceChildren(...g.method.fields.map((f) => el("label", { title: f.help },
      `${f.name} `, el("input", { class: "graph-setting", "data-name": f.name, "data-type": f.type, size: 6,
        value: f.default === null ? "" : String(f.default) }))));
    const t = g.transcoders;
    $("graph-info").textContent = t
      ? `${g.method.name}: ${g.method.summary} Transcoders: ${t.kind}, layers ${t.layers.join(", ")}, ${t.d_sae} ` +
        "features each."
      : `${g.method.name}: no transcoders on this server (start it with --transcoders DIR to compute graphs); ` +
        "saved graph.json files under the run directories open below.";
    $("graph-run").disabled = !t;
    listGraphs(g.found);
  } catch (err) { showError($("graph-error"), err); }
}

function listGraphs(found) {
  if (!found.length) {
    $("graph-list").replaceChildren(el("p", { class: "dim",
      text: "No graphs yet (compute one above, or mechscope graph --out DIR writes graph.json)." }));
    return;
  }
  $("graph-list").replaceChildren(...found.map((f) => el("button", { type: "button", class: "item",
    "data-ref": f.ref, text: f.title, onclick: () => openGraph(f.ref) })));
}

function graphSettings() {
  const out = {};
  for (const input of document.querySelectorAll(".graph-setting")) {
    const v = input.value.trim();
    if (v === "") { if (input.dataset.type.includes("None")) out[input.dataset.name] = null; continue; }
    out[input.dataset.name] = Number(v);
  }
  return out;
}

async function runGraph(event) {
  event.preventDefault();
  $("graph-busy").replaceChildren("computing the graph… ", cancelButton("graph"));
  $("graph-error").replaceChildren();
  try {
    const body = { prompt: $("graph-prompt").value, settings: graphSettings() };
    if ($("graph-target").value) body.target = $("graph-target").value;
    const d = await api("/api/graph/run", body);
    agraph.picked.clear();
    drawGraph(d);
  } catch (err) { showError($("graph-error"), err); }
  try { listGraphs((await api("/api/graphs")).found); } catch (err) { showError($("graph-error"), err); }
  $("graph-busy").replaceChildren();
}

async function openGraph(ref, nodeThreshold, edgeThreshold) {
  $("graph-error").replaceChildren();
  try {
    let q = `/api/graph?ref=${encodeURIComponent(ref)}`;
    if (nodeThreshold !== undefined) q += `&node_threshold=${nodeThreshold}&edge_threshold=${edgeThreshold}`;
    if (ref !== agraph.ref) agraph.picked.clear();
    drawGraph(await api(q));
  } catch (err) { showError($("graph-error"), err); }
}

function graphSlider(id, label, value) {
  return el("label", { title: `prune: keep what holds this share of the influence on the logits` }, `${label} `,
    el("input", { type: "range", id, min: 0, max: 1, step: 0.01, value }),
    el("span", { id: `${id}-value`, text: fmt(value, 2) }));
}

function drawGraph(d) {
  agraph.ref = d.ref;
  agraph.data = d;
  const nt = d.pruned.node_threshold;
  const et = d.pruned.edge_threshold;
  const feats = d.nodes.filter((n) => n.kind === "feature").length;
  const info = el("p", { id: "graph-summary", text: `${d.ref}: ${JSON.stringify(d.prompt)} on ` +
    `${(d.model && d.model.model) || "?"}. Full graph: ${d.full.nodes} nodes (${d.full.features} features), ` +
    `${d.full.edges} edges, replacement score ${fmt(d.full.replacement)}, completeness ${fmt(d.full.completeness)}. ` +
    `Pruned: ${d.nodes.length} nodes (${feats} features), ${d.n_edges} edges` +
    `${d.n_edges > d.edges.length ? ` (the strongest ${d.edges.length} drawn)` : ""}, replacement ` +
    `${fmt(d.pruned.replacement)}, completeness ${fmt(d.pruned.completeness)}.` });
  const sliders = el("div", { class: "row" }, graphSlider("graph-node-threshold", "node threshold", nt),
    graphSlider("graph-edge-threshold", "edge threshold", et),
    el("a", { id: "graph-download", href: `/api/graph/json?ref=${encodeURIComponent(d.ref)}`,
      download: "graph.json", text: "download graph.json (with supernodes)" }));
  const side = el("div", { id: "graph-node", class: "graph-side" },
    el("p", { class: "dim", text: "Click a node for its edges and activation; shift-click to pick nodes for a " +
      "supernode." }));
  const box = el("div", { id: "graph-svg-box", class: "scroll grow" }, graphSvg(d));
  $("graph-view").replaceChildren(info, sliders, el("div", { class: "columns" }, box, side), supernodePanel(d));
  for (const id of ["graph-node-threshold", "graph-edge-threshold"]) {
    const input = $(id);
    input.addEventListener("input", () => { $(`${id}-value`).textContent = fmt(input.value, 2); });
    input.addEventListener("change", () => openGraph(agraph.ref, Number($("graph-node-threshold").value),
      Number($("graph-edge-threshold").value)));
  }
  if (agraph.open && d.nodes.some((n) => n.id === agraph.open)) openNode(agraph.open);
}

function graphLayout(d) {
  const nPos = d.tokens.length;
  const cells = {};
  for (const n of d.nodes) {
    if (n.kind === "logit") continue;
    const key = `${n.layer}:${n.position}`;
    (cells[key] = cells[key] || []).push(n);
  }
  const widest = Math.max(1, ...Object.values(cells).map((c) => c.length));
  const colW = Math.max(70, 18 * widest + 16);
  const rowH = 56;
  const rows = d.n_layers + 2;  // embeddings, layers, logits
  const width = 60 + colW * nPos;
  const height = rowH * rows + 40;
  const pos = {};
  const y = (layer) => height - 40 - (layer + 1) * rowH - rowH / 2;  // embeddings (-1) at the bottom
  for (const c of Object.values(cells)) {
    c.forEach((n, i) => {
      pos[n.id] = { x: 60 + colW * n.position + (colW * (i + 0.5)) / c.length, y: y(n.layer) };
    });
  }
  const logits = d.nodes.filter((n) => n.kind === "logit");
  logits.forEach((n, i) => { pos[n.id] = { x: 60 + ((width - 60) * (i + 0.5)) / logits.length, y: y(d.n_layers) }; });
  return { pos, width, height, colW, rowH, y };
}

function graphSvg(d) {
  const { pos, width, height, colW, y } = graphLayout(d);
  const s = svg("svg", { width, height, class: "agraph", id: "graph-svg" });
  for (let layer = -1; layer <= d.n_layers; layer++) {
    const name = layer < 0 ? "emb" : layer === d.n_layers ? "logit" : `L${layer}`;
    s.append(svg("text", { x: 4, y: y(layer) + 4, class: "axis" }, name));
  }
  d.tokens.forEach((t, p) => s.append(svg("text", { x: 60 + colW * (p + 0.5), y: height - 10, "text-anchor": "middle",
    class: "axis" }, visible(t))));
  const max = Math.max(1e-12, ...d.edges.map((e) => Math.abs(e[2])));
  for (const [t, src, w] of [...d.edges].reverse()) {  // strongest drawn last, on top
    const a = pos[d.nodes[src].id];
    const b = pos[d.nodes[t].id];
    const line = svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "gedge", stroke: w >= 0 ? "#2563eb" : "#dc2626",
      "stroke-width": (0.5 + 4 * Math.abs(w) / max).toFixed(2), "data-source": d.nodes[src].id,
      "data-target": d.nodes[t].id });
    hoverTip(line, () => [`${d.nodes[src].id} → ${d.nodes[t].id}`, `weight ${Number(w).toPrecision(4)}`]);
    s.append(line);
  }
  for (const n of d.nodes) {
    const p = pos[n.id];
    const shape = n.kind === "error"
      ? svg("rect", { x: p.x - 6, y: p.y - 6, width: 12, height: 12 })
      : svg("circle", { cx: p.x, cy: p.y, r: n.kind === "feature" ? 7 : 8 });
    setProps(shape, { class: `gnode ${n.kind}${agraph.picked.has(n.id) ? " picked" : ""}`, "data-node": n.id });
    shape.addEventListener("click", (event) => {
      if (event.shiftKey) togglePick(n.id); else openNode(n.id);
    });
    hoverTip(shape, () => [n.id, n.kind === "logit" ? `token ${JSON.stringify(n.token)} p=${fmt(n.probability)}`
      : `token ${JSON.stringify(n.token)}`, `activation ${fmt(n.activation)}`, `influence ${fmt(n.influence)}`]);
    s.append(shape);
    if (n.kind === "logit") s.append(svg("text", { x: p.x, y: p.y - 12, "text-anchor": "middle", class: "axis" },
      visible(n.token)));
  }
  return s;
}

function togglePick(id) {
  if (agraph.picked.has(id)) agraph.picked.delete(id); else agraph.picked.add(id);
  for (const shape of document.querySelectorAll("#graph-svg .gnode")) {
    shape.classList.toggle("picked", agraph.picked.has(shape.dataset.node));
  }
  $("supernode-picked").textContent = `${agraph.picked.size} node(s) picked: ${[...agraph.picked].join(", ")}`;
  if (agraph.open === id) $("graph-pick").textContent = agraph.picked.has(id) ? "unpick" : "pick for a supernode";
}

function edgeTable(title, edges) {
  return el("div", {}, el("h4", { text: title }), edges.length
    ? el("table", { class: "edges" }, el("tbody", {}, ...edges.map((e) => el("tr", {},
      el("td", {}, el("a", { href: "#graphs", text: e.node, onclick: (ev) => { ev.preventDefault(); openNode(e.node); } })),
      el("td", { class: "num", text: Number(e.weight).toPrecision(4) })))))
    : el("p", { class: "dim", text: "none" }));
}

async function openNode(id) {
  agraph.open = id;
  for (const shape of document.querySelectorAll("#graph-svg .gnode")) {
    shape.classList.toggle("selected", shape.dataset.node === id);
  }
  for (const line of document.querySelectorAll("#graph-svg .gedge")) {
    line.classList.toggle("lit", line.dataset.source === id || line.dataset.target === id);
  }
  const side = $("graph-node");
  try {
    const d = await api(`/api/graph/node?ref=${encodeURIComponent(agraph.ref)}&node=${encodeURIComponent(id)}&k=8`);
    const n = d.node;
    const parts = [el("h3", { id: "graph-node-id", text: n.id }),
      el("p", { id: "graph-node-activation", text: `activation ${fmt(n.activation, 4)} · influence ${fmt(n.influence, 4)}` }),
      el("p", { class: "dim", text: `${n.kind} at layer ${n.layer}, position ${n.position} (token ` +
        `${JSON.stringify(n.token)})${d.supernodes.length ? `; in ${d.supernodes.join(", ")}` : ""}` }),
      el("button", { type: "button", id: "graph-pick", onclick: () => togglePick(n.id),
        text: agraph.picked.has(n.id) ? "unpick" : "pick for a supernode" }),
      edgeTable("strongest incoming edges (full graph)", d.incoming),
      edgeTable("strongest outgoing edges (full graph)", d.outgoing)];
    if (n.kind === "feature") {
      parts.push(el("h4", { text: "verify in the real model" }), el("div", { class: "row" },
        el("label", {}, "multiply by ", el("input", { id: "graph-factor", type: "number", step: "any", value: 0,
          size: 4 })),
        el("button", { type: "button", id: "graph-verify", onclick: () => verifyNode(n.id) }, "verify (ablate at 0)")),
      el("div", { id: "graph-verify-result" }));
    }
    side.replaceChildren(...parts);
  } catch (err) { showError(side, err); }
}

async function verifyNode(id) {
  const out = $("graph-verify-result");
  out.replaceChildren(el("span", { class: "dim" }, "intervening… ", cancelButton("graph verify")));
  try {
    const v = await api("/api/graph/verify", { ref: agraph.ref, node: id, factor: Number($("graph-factor").value) });
    const rows = [...v.rows].sort((a, b) => Math.abs(b.real) - Math.abs(a.real)).slice(0, 15);
    out.replaceChildren(
      el("p", { id: "graph-verify-summary", text: `feature set to ${fmt(v.value, 4)}: ${v.rows.length} downstream ` +
        `nodes; correlation of predicted and real ${fmt(v.correlation)}, slope ${fmt(v.slope)}, mean |error| ` +
        `${fmt(v.mean_abs_error, 4)}` }),
      el("table", { class: "edges", id: "graph-verify-table" }, el("thead", {}, el("tr", {}, el("th", { text: "node" }),
        el("th", { text: "predicted" }), el("th", { text: "real" }))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, el("td", { text: r.target }),
        el("td", { class: "num", text: fmt(r.predicted, 4) }), el("td", { class: "num", text: fmt(r.real, 4) }))))));
  } catch (err) { showError(out, err); }
}

function supernodeList(supernodes) {
  const names = Object.keys(supernodes);
  if (!names.length) return el("p", { class: "dim", text: "No supernodes yet." });
  return el("ul", { id: "supernode-list" }, ...names.map((name) => el("li", { "data-supernode": name },
    el("a", { href: "#graphs", text: name, onclick: (ev) => {
      ev.preventDefault();
      for (const shape of document.querySelectorAll("#graph-svg .gnode")) {
        shape.classList.toggle("member", supernodes[name].includes(shape.dataset.node));
      }
    } }), ` (${supernodes[name].length}): ${supernodes[name].join(", ")}`)));
}

function supernodePanel(d) {
  const list = el("div", { id: "supernodes" }, supernodeList(d.supernodes));
  const name = el("input", { id: "supernode-name", placeholder: "name" });
  const save = async () => {
    try {
      const r = await api("/api/graph/supernode", { ref: agraph.ref, name: name.value, nodes: [...agraph.picked] });
      agraph.data.supernodes = r.supernodes;
      list.replaceChildren(supernodeList(r.supernodes));
    } catch (err) { showError(list, err); }
  };
  return el("div", {}, el("h3", { text: "Supernodes" }),
    el("p", { id: "supernode-picked", class: "dim", text: `${agraph.picked.size} node(s) picked` }),
    el("div", { class: "row" }, name, el("button", { type: "button", id: "supernode-save", onclick: save },
      "save supernode")), list);
}

// --- attribution & vision ------------------------------------------------------------------------------------------

const VISION_DEFAULT = ["saliency", "integrated_gradients", "grad_cam", "edge_detector"];
const vision = { image: null, png: null };

async function openVision(organism) {
  const name = organism || $("vision-organism").value || "shapes-cnn";
  $("vision-info").textContent = "loading the organism…";
  $("vision-error").replaceChildren();
  try {
    const g = await api(`/api/vision?organism=${encodeURIComponent(name)}&n=12`);
    const select = $("vision-organism");
    if (!select.options.length) {
      for (const o of g.organisms) select.append(el("option", { value: o, text: o }));
    }
    select.value = g.organism;
    $("vision-info").textContent = `${g.organism}: classes ${g.classes.join(", ")}; ${g.accuracy_name} ` +
      `${fmt(g.accuracy)}; CAMs at ${g.cam_site}; masks: ${g.masks}. Pick an image:`;
    vision.image = null; vision.png = null; vision.classes = g.classes;
    $("vision-images").replaceChildren(...g.images.map((im) => el("button", { type: "button", class: "thumb",
      "data-index": im.index, title: `label ${g.classes[im.label]}, predicted ${g.classes[im.predicted]}`,
      onclick: (e) => pickImage(im.index, e.currentTarget) },
      el("img", { src: im.png, alt: `image ${im.index}`, width: 64, height: 64 }),
      el("span", { class: "dim", text: g.classes[im.label] }))));
    $("vision-methods").replaceChildren(...g.methods.map((m) => el("label", { title: m.summary },
      el("input", { type: "checkbox", class: "vision-method", value: m.name,
        ...(VISION_DEFAULT.includes(m.name) ? { checked: "" } : {}) }), ` ${m.name}`)));
    pickImage(0, $("vision-images").firstChild);
  } catch (err) { showError($("vision-error"), err); $("vision-info").textContent = ""; }
}

function pickImage(index, button) {
  vision.image = index; vision.png = null;
  $("vision-upload").value = "";
  for (const b of document.querySelectorAll("#vision-images .thumb")) b.classList.toggle("active", b === button);
}

function uploadImage() {
  const file = $("vision-upload").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    vision.png = String(reader.result);
    vision.image = null;
    for (const b of document.querySelectorAll("#vision-images .thumb")) b.classList.remove("active");
  };
  reader.readAsDataURL(file);
}

async function runVision() {
  const methods = [...document.querySelectorAll(".vision-method:checked")].map((c) => c.value);
  const body = { organism: $("vision-organism").value, methods, sanity: $("vision-sanity").checked,
    target: vision.png ? "pred" : $("vision-target").value };
  if (vision.png) body.png = vision.png; else body.image = vision.image ?? 0;
  $("vision-busy").replaceChildren("computing the maps and their metrics… ", cancelButton("image attribution"));
  $("vision-error").replaceChildren();
  try { drawVision(await api("/api/vision/attribute", body)); } catch (err) { showError($("vision-error"), err); }
  $("vision-busy").replaceChildren();
}

function drawVision(d) {
  const name = (k) => d.classes[k] ?? String(k);
  const source = d.image.upload ? `your PNG (${d.image.upload.width} × ${d.image.upload.height}, ` +
    `${d.image.upload.note})` : `held-out image ${d.image.index} (label ${name(d.label)})`;
  const probs = d.probs.map((p, k) => `${name(k)} ${fmt(p, 2)}`).join(", ");
  const head = el("div", { class: "vision-input" },
    el("figure", {}, el("img", { src: d.image.png, alt: "input", width: 128, height: 128 }),
      el("figcaption", { text: "input" })),
    d.mask ? el("figure", {}, el("img", { src: d.mask.png, alt: "mask", width: 128, height: 128 }),
      el("figcaption", { text: `mask (${fmt(100 * d.mask.area, 0)}% of pixels)` })) : null,
    el("p", { text: `${source}: predicted ${name(d.predicted)} (${probs}); explaining ${name(d.target)}.` }));
  const cards = d.methods.map((m) => {
    const q = m.metrics;
    const rows = [
      ["deletion AUC ↓", q.deletion_auc, q.deletion_chance_auc],
      ["insertion AUC ↑", q.insertion_auc, q.insertion_chance_auc],
    ];
    if (q.localisation) {
      rows.push(["mass in mask ↑", q.localisation.mass_in_mask, q.localisation.chance]);
      rows.push(["top-k precision ↑", q.localisation.top_k_precision, q.localisation.chance]);
    }
    if (m.randomisation) rows.push(["rank corr. after randomising ↓", m.randomisation.final.spearman_abs, 0]);
    const table = el("table", { class: "metrics" }, el("thead", {}, el("tr", {}, el("th", { text: "" }),
      el("th", { text: "map" }), el("th", { text: "chance" }))),
      el("tbody", {}, ...rows.map(([label, v, c]) => el("tr", { "data-metric": label },
        el("td", { text: label }), el("td", { class: "num", text: fmt(v) }), el("td", { class: "num dim", text: fmt(c) })))));
    const extra = q.completeness ? el("p", { class: "dim",
      text: `completeness gap ${fmt(q.completeness.relative_gap)} of the output change` }) : null;
    return el("div", { class: "vision-card", "data-method": m.method },
      el("h4", { text: m.method + (m.tags.includes("baseline") ? " (baseline: ignores the model)" : "") }),
      el("img", { class: "overlay", src: m.overlay, alt: `${m.method} map`, width: 128, height: 128 }),
      table, extra, el("p", { class: "dim", text: `map computed in ${fmt(1000 * m.seconds, 0)} ms` }));
  });
  $("vision-out").replaceChildren(head, el("div", { class: "vision-grid" }, ...cards),
    el("p", { class: "dim", text: "Deletion: the class probability as the map's top pixels are removed (lower is " +
      "better); insertion: as they are restored onto a blurred image (higher is better); chance: the same curves " +
      "for a random pixel order. The randomisation check re-initialises every weight layer: a map that still " +
      "correlates with itself (near 1, like the edge detector) does not depend on the model." }));
}

// --- API -----------------------------------------------------------------------------------------------------------

async function openApi() {
  try {
    const [listing, methods] = await Promise.all([api("/api"), api("/api/methods")]);
    $("endpoints").replaceChildren(el("tbody", {}, ...listing.endpoints.map((e) => el("tr", {},
      el("td", { text: e.method }), el("td", {}, el("code", { text: e.path })), el("td", { text: e.summary }),
      el("td", { class: "dim", text: e.params.map((p) => p.name).join(", ") })))));
    const families = Object.entries(methods.families).map(([family, d]) => el("div", { class: "family" },
      el("h3", { text: family }),
      el("table", {}, el("tbody", {}, ...d.methods.map((m) => el("tr", { class: "method", "data-method": m.name },
        el("td", {}, el("code", { text: m.name })), el("td", { text: m.summary }),
        el("td", { class: "dim", text: m.fields.map((f) => `${f.name}=${JSON.stringify(f.default)}`).join(" ") })))))));
    $("methods").replaceChildren(...families);
  } catch (err) { showError($("methods"), err); }
}

// --- start ---------------------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("prompt-form").addEventListener("submit", runPrompt);
  $("dla-form").addEventListener("submit", runDLA);
  $("attr-form").addEventListener("submit", runAttribution);
  $("circuit-run-form").addEventListener("submit", runCircuit);
  $("graph-form").addEventListener("submit", runGraph);
  $("att-layer").addEventListener("change", loadAttention);
  $("feature-search").addEventListener("submit", (e) => { e.preventDefault(); openLatent(Number($("feature-id").value)); });
  $("feature-token-go").addEventListener("click", searchToken);
  $("feature-words-go").addEventListener("click", searchExplanations);
  $("vision-organism").addEventListener("change", () => openVision($("vision-organism").value));
  $("vision-upload").addEventListener("change", uploadImage);
  $("vision-run").addEventListener("click", runVision);
  window.addEventListener("hashchange", route);
  route();
  loadStatus();
});
