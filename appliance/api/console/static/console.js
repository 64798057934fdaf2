// The console: polls the appliance's /console/api/* endpoints and draws them.
// Plain DOM, no framework, nothing loaded from anywhere but this appliance (the page's
// Content-Security-Policy enforces that). Data goes in as text nodes, never as HTML:
// model names, key names and reasons come from clients and config.
"use strict";

const KEY_STORE = "appliance.console.key"; // sessionStorage: this tab only, gone when it closes
const FAST_MS = 2000; // live numbers and the audit
const SLOW_MS = 5000; // models, spend
const BENCH_MS = 60000;
const AUDIT_ROWS = 30; // the last N requests

class Unauthorized extends Error {}

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path) {
  const headers = {};
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = "Bearer " + key;
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response;
}

const json = async (path) => (await api(path)).json();

// -- formatting ------------------------------------------------------------------------------
const GIB = 1024 ** 3;
const gib = (bytes) => (bytes / GIB).toFixed(1) + " GiB";
const num = (x) => (x === null || x === undefined ? "-" : Number(x).toLocaleString("en-US"));
const usd = (x) => (x === null || x === undefined ? "-" : Number(x).toFixed(4));
const secs = (x) => (x === null || x === undefined ? "-" : x < 1 ? (x * 1000).toFixed(0) + " ms" : x.toFixed(2) + " s");
const pct = (x) => (x === null || x === undefined ? "-" : (x * 100).toFixed(0) + " %");
const clock = (ts) => new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
const day = (ts) => new Date(ts * 1000).toISOString().slice(0, 10);

function fact(label, value) {
  return el("div", {}, el("span", { class: "label" }, label), value);
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// -- machine and models ----------------------------------------------------------------------
function drawOverview(o) {
  const status = $("status");
  if (o.download) {
    status.textContent = "downloading " + o.download.model;
    status.className = "pill wait";
  } else if (!o.ready) {
    status.textContent = o.loading ? "loading" : "not ready";
    status.className = "pill wait";
  } else {
    status.textContent = "running";
    status.className = "pill ok";
  }
  $("airgap-banner").hidden = !o.routing.air_gapped;

  const m = o.machine;
  const machine = $("machine");
  if (m) {
    const gpus = m.gpus.length
      ? m.gpus.map((g) => `${g.name} (${gib(g.free_bytes)} free of ${gib(g.total_bytes)})`).join(", ")
      : "none";
    machine.replaceChildren(
      fact("machine", `${m.name} (${m.source}, ${m.os})`),
      fact("CPU", `${m.cpu.model} · ${m.cpu.physical_cores} cores / ${m.cpu.logical_cores} threads`),
      fact("RAM", `${gib(m.ram_available_bytes)} available of ${gib(m.ram_total_bytes)}`),
      fact("GPUs", gpus),
      fact("cloud", o.routing.air_gapped ? "air-gapped" : o.routing.cloud_enabled
        ? o.routing.cloud_models.join(", ") : "none configured"),
    );
  } else {
    machine.replaceChildren(fact("machine", "not reported by this server"));
  }

  const dl = $("download");
  dl.hidden = !o.download;
  if (o.download) {
    const share = o.download.total_bytes ? o.download.done_bytes / o.download.total_bytes : 0;
    const bar = el("div", { class: "bar download" }, el("div"));
    bar.firstElementChild.style.width = `${(share * 100).toFixed(1)}%`; // CSSOM: the CSP allows no style attributes
    dl.replaceChildren(
      el("p", {}, `Downloading ${o.download.model}: ${gib(o.download.done_bytes)} of ${gib(o.download.total_bytes)} (${pct(share)})`),
      bar,
    );
  }

  const reasons = [];
  fill($("models").tBodies[0], o.models.map((mdl) => {
    const p = mdl.plan;
    if (p) reasons.push(el("li", {}, `${mdl.id}: ${p.reason}`));
    if (p && p.passed_over) reasons.push(el("li", { class: "error" }, p.passed_over));
    return modelRow(mdl, p);
  }));
  $("plan-reasons").replaceChildren(...reasons);
}

function placementText(p) {
  if (!p) return "-";
  if (p.placement === "cpu") return `CPU, RAM ${gib(p.ram_bytes)}`;
  if (p.placement === "gpu") return `GPU ${gib(p.gpu_bytes)}` + (p.ram_bytes ? ` + RAM ${gib(p.ram_bytes)}` : "");
  return `GPU ${gib(p.gpu_bytes)} + RAM ${gib(p.ram_bytes)}` +
    (p.n_cpu_moe ? ` (experts of ${p.n_cpu_moe} layers in RAM)` : "") +
    (p.n_gpu_layers >= 0 ? ` (-ngl ${p.n_gpu_layers})` : "");
}

function modelRow(mdl, p) {
  return el("tr", { "data-model": mdl.id },
    el("td", {}, mdl.id),
    el("td", {}, mdl.roles.join(", ") || "-"),
    el("td", {}, p ? p.quant : "-"),
    el("td", {}, p ? p.runtime : "-"),
    el("td", {}, placementText(p)),
    el("td", { class: "num" }, num(mdl.n_ctx)),
    el("td", { class: "num" }, `${mdl.slots_busy} / ${mdl.slots_total}`),
    el("td", { class: "num" }, mdl.queued),
    el("td", { class: "num" }, p ? gib(p.gpu_bytes + p.ram_bytes) : "-"),
  );
}

// -- live ------------------------------------------------------------------------------------
function drawLive(l) {
  const t = l.totals;
  $("in-flight").textContent = l.in_flight;
  $("queued").textContent = l.queued;
  $("requests-total").textContent = num(t.requests);
  $("tokens-total").textContent = num(t.prompt_tokens + t.completion_tokens);
  $("ttft").textContent = l.ttft_s.p50 === null ? "-" : `${secs(l.ttft_s.p50)} / ${secs(l.ttft_s.p90)}`;
  $("cache-rate").textContent = pct(l.cache_hit_rate ?? l.cache_hit_rate_total);
  // "now": the last completed step (the one in progress is still filling)
  const done = l.series.length > 1 ? l.series[l.series.length - 2] : l.series[0];
  $("decode-now").textContent = done ? done.decode_tok_s.toFixed(1) : "0";
  $("prefill-now").textContent = done ? done.prefill_tok_s.toFixed(1) : "0";
  drawChart(l.series);
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(series) {
  const chart = $("chart");
  const W = 800, H = 180, top = 10, bottom = 20;
  const peak = Math.max(1, ...series.map((p) => Math.max(p.decode_tok_s, p.prefill_tok_s)));
  const scale = niceCeil(peak);
  const x = (i) => (series.length > 1 ? (i / (series.length - 1)) * W : 0);
  const y = (v) => H - bottom - (v / scale) * (H - top - bottom);
  const line = (key) => series.map((p, i) => `${x(i).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
  const parts = [];
  for (const f of [0, 0.5, 1]) {
    parts.push(svg("line", { class: "grid", x1: 0, x2: W, y1: y(scale * f), y2: y(scale * f) }));
    parts.push(svg("text", { x: 4, y: y(scale * f) - 2 }, num(scale * f)));
  }
  parts.push(svg("text", { x: 4, y: H - 4 }, "-10 min"));
  parts.push(svg("text", { x: W - 30, y: H - 4 }, "now"));
  parts.push(svg("polyline", { class: "prefill", points: line("prefill_tok_s") }));
  parts.push(svg("polyline", { class: "decode", points: line("decode_tok_s") }));
  chart.replaceChildren(...parts);
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// -- routing audit ---------------------------------------------------------------------------
function drawAudit(a) {
  $("refused-count").textContent = num(a.refused_cloud);
  $("audit-note").textContent = a.logged ? "" : "this server keeps no usage log";
  fill($("audit").tBodies[0], a.rows.map((r) => el("tr", { "data-route": r.route },
    el("td", { title: day(r.ts) }, clock(r.ts)),
    el("td", {}, r.key || "-"),
    el("td", {}, r.dialect || "-"),
    el("td", {}, r.served_model || r.requested_model || "-"),
    el("td", { class: "route route-" + r.route }, r.route),
    el("td", { class: "reason" }, r.reason),
    el("td", { class: "num" }, `${num(r.prompt_tokens)} / ${num(r.cached_tokens)} / ${num(r.completion_tokens)}`),
    el("td", { class: "num" }, secs(r.latency_ms / 1000)),
    el("td", { class: "num" }, usd(r.cost_usd)),
    el("td", {}, r.status),
  )));
}

// -- spend -----------------------------------------------------------------------------------
function drawSpend(s) {
  const summary = $("spend-summary");
  if (!s.logged) {
    summary.replaceChildren(fact("spend", "this server keeps no usage log"));
    return;
  }
  const budget = s.daily_budget_usd;
  summary.replaceChildren(
    fact("cloud spend today", `${usd(s.spent_today_usd)} USD` + (budget !== null ? ` of ${usd(budget)} USD budget` : " (no budget set)")),
    fact(`cloud spend, last ${s.days} days`, `${usd(s.spent_usd)} USD`),
    fact("all-cloud cost of the same traffic", s.reference_model
      ? `${usd(s.all_cloud_usd)} USD (${s.reference_model} for every request)`
      : "set router.reference_cloud_model to compare"),
  );
  const bar = $("budget");
  bar.hidden = budget === null;
  if (budget !== null) bar.firstElementChild.style.width = `${Math.min(100, (s.spent_today_usd / budget) * 100)}%`;
  fill($("spend").tBodies[0], s.rows.map((r) => el("tr", {},
    el("td", {}, r.day), el("td", { class: "route-" + r.route }, r.route), el("td", {}, r.model),
    el("td", {}, r.key || "-"), el("td", { class: "num" }, num(r.requests)),
    el("td", { class: "num" }, num(r.prompt_tokens)), el("td", { class: "num" }, num(r.cached_tokens)),
    el("td", { class: "num" }, num(r.completion_tokens)), el("td", { class: "num" }, usd(r.cost_usd)),
    el("td", { class: "num" }, usd(r.all_cloud_usd)),
  )));
}

// -- bench -----------------------------------------------------------------------------------
const chartUrls = new Map(); // run name -> blob URL of its PNG (fetched with the key, like all data)

async function drawBench(b) {
  const box = $("bench");
  if (!b.runs.length) {
    box.replaceChildren(el("p", { class: "muted" }, `No bench runs in ${b.folder} yet (appliance bench writes them there).`));
    return;
  }
  const runs = [];
  for (const run of b.runs) {
    const tables = run.tables.map((t) => el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, t.workload), el("th", {}, "target"),
        ...t.columns.map((c) => el("th", { class: "num" }, c)), el("th", { class: "num" }, "ok / errors"))),
      el("tbody", {}, ...t.rows.map((r) => el("tr", {}, el("td", {}, r.case), el("td", {}, r.target),
        ...r.values.map((v) => el("td", { class: "num" }, v === null ? "-" : num(v))),
        el("td", { class: "num" }, `${r.ok} / ${r.errors}`)))),
    ));
    let img = null;
    if (run.chart) {
      if (!chartUrls.has(run.name)) {
        const blob = await (await api(`/console/api/bench/${encodeURIComponent(run.name)}.png`)).blob();
        chartUrls.set(run.name, URL.createObjectURL(blob));
      }
      img = el("img", { src: chartUrls.get(run.name), alt: `bench chart ${run.name}` });
    }
    runs.push(el("div", { class: "run" },
      el("h3", {}, `${run.created || run.name}: ${run.targets.join(", ")}`),
      el("p", { class: "muted" }, run.command), ...tables, img));
  }
  box.replaceChildren(...runs);
}

// -- the loop --------------------------------------------------------------------------------
const timers = [];

function every(ms, task) {
  const run = async () => {
    try {
      await task();
      $("updated").textContent = "updated " + new Date().toLocaleTimeString([], { hour12: false });
    } catch (err) {
      if (err instanceof Unauthorized) return askForKey("That key was refused.");
      $("status").textContent = "unreachable";
      $("status").className = "pill bad";
    }
  };
  run();
  timers.push(setInterval(run, ms));
}

function stop() {
  while (timers.length) clearInterval(timers.pop());
}

function start() {
  $("key-panel").hidden = true;
  $("console").hidden = false;
  $("forget-key").hidden = !sessionStorage.getItem(KEY_STORE);
  const cloudOnly = () => ($("cloud-only").checked ? "&route=cloud" : "");
  every(SLOW_MS, async () => drawOverview(await json("/console/api/overview")));
  every(FAST_MS, async () => drawLive(await json("/console/api/live")));
  let asked = 0; // only the newest answer is drawn: a poll sent before the filter changed is stale
  const audit = async () => {
    const mine = ++asked;
    const rows = await json(`/console/api/audit?limit=${AUDIT_ROWS}${cloudOnly()}`);
    if (mine === asked) drawAudit(rows);
  };
  every(FAST_MS, audit);
  every(SLOW_MS, async () => drawSpend(await json("/console/api/spend?days=30")));
  every(BENCH_MS, async () => drawBench(await json("/console/api/bench")));
  $("cloud-only").onchange = audit;
}

function askForKey(message) {
  stop();
  sessionStorage.removeItem(KEY_STORE);
  $("console").hidden = true;
  $("forget-key").hidden = true;
  $("key-panel").hidden = false;
  $("status").textContent = "key needed";
  $("status").className = "pill bad";
  $("key-error").hidden = !message;
  $("key-error").textContent = message || "";
  $("key-input").focus();
}

async function init() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    $("key-input").value = "";
    start();
  });
  $("forget-key").addEventListener("click", () => askForKey(""));
  // Public: says whether a key is needed, so the page never sends a request bound to fail.
  const access = await (await fetch("/console/api/access", { cache: "no-store" })).json();
  if (access.keys_required && !sessionStorage.getItem(KEY_STORE)) askForKey("");
  else start();
}

document.addEventListener("DOMContentLoaded", init);
