// tunelab studio: the key, calls to the server's API, fragments, Server-Sent Events, loss charts.
// The key is typed once and kept in sessionStorage (this tab, until it closes); with --no-auth no key is asked.
"use strict";
const TL = (() => {
  const KEY = "tunelab.key";
  const body = document.body;
  const args = JSON.parse(body.dataset.args || "{}");
  const needsKey = body.dataset.auth === "1";
  const key = () => sessionStorage.getItem(KEY);
  const hooks = [];
  let pageInit = null;

  class ApiError extends Error {
    constructor(message, status, param) { super(message); this.status = status; this.param = param; }
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const k = key();
    if (needsKey && k) h.Authorization = "Bearer " + k;
    return h;
  }

  async function errorOf(r) {
    let msg = `the server answered ${r.status} ${r.statusText}`, param = null;
    try {
      const j = await r.json();
      if (j.error && j.error.message) { msg = j.error.message; param = j.error.param; }
    } catch (e) { /* not JSON */ }
    if (r.status === 401 && needsKey) askKey(msg);
    return new ApiError(msg, r.status, param);
  }

  // fetch with the key; a 4xx/5xx becomes an ApiError carrying the server's own message
  async function api(path, opts = {}) {
    const o = Object.assign({}, opts, { headers: headers(opts.headers) });
    let r;
    try { r = await fetch(path, o); } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError("the server cannot be reached: is tunelab serve still running?", 0);
    }
    if (!r.ok) throw await errorOf(r);
    return r;
  }
  const json = async (path, opts) => (await api(path, opts)).json();
  const postJSON = (path, obj) => json(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(obj) });

  function showErr(el, e) {
    if (!el) return;
    el.textContent = e ? (e.message || String(e)) : "";
  }

  async function loadFragments(root) {
    const els = [...root.querySelectorAll("[data-fragment]")];
    await Promise.all(els.map(async (el) => {
      try {
        el.innerHTML = await (await api(el.dataset.fragment)).text();
      } catch (e) {
        el.innerHTML = '<p class="err" role="alert"></p>';
        el.firstChild.textContent = e.message;
      }
    }));
    for (const h of hooks) await h(root);
  }

  // Server-Sent Events over fetch (EventSource cannot send the key): yields each event's data
  async function* sse(path, opts = {}) {
    const r = await api(path, Object.assign({}, opts, {
      headers: Object.assign({ Accept: "text/event-stream" }, opts.headers || {}) }));
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (data) yield data;
      }
    }
  }

  // ---- loss charts (uPlot): the look is serve/studio/chart.py's CHART (body data-chart) ------------------------
  // per run: training (solid), validation (dashed, points), the base model's validation loss (a ring at step 0)
  const STYLE = JSON.parse(body.dataset.chart || "{}");
  const parts = (r) => [r.train || [], r.valid || [], r.base || []];
  const count = (runs) => runs.reduce((n, r) => n + (r.train || []).length + (r.valid || []).length, 0);

  function chartData(runs) {
    const steps = [...new Set(runs.flatMap((r) => parts(r).flat().map((p) => p[0])))].sort((a, b) => a - b);
    const at = new Map(steps.map((s, i) => [s, i]));
    const data = [steps];
    for (const r of runs) {
      for (const part of parts(r)) {
        const ys = new Array(steps.length).fill(null);
        for (const [s, y] of part) ys[at.get(s)] = y;
        data.push(ys);
      }
    }
    return data;
  }

  function chartOptions(el, runs, width) {
    const series = [{ label: "step" }], pal = STYLE.runs, b = STYLE.base;
    runs.forEach((r, i) => {
      const c = pal[i % pal.length];
      const who = runs.length > 1 ? r.name + " " : "";
      const [tl, vl, bl] = r.labels || ["train", "validation", "base model (validation, step 0)"];  // runs_data.Curves
      series.push({ label: who + tl, stroke: c.train, width: 2, spanGaps: true, points: { show: false } });
      series.push({ label: who + vl, stroke: c.valid, width: 2, dash: STYLE.valid_dash, spanGaps: true,
                    points: { show: true, size: 6, fill: c.valid, stroke: c.valid } });
      series.push({ label: who + bl, stroke: c.valid, width: 0, paths: () => null,
                    points: { show: true, size: b.size, width: b.width, stroke: c.valid, fill: b.fill } });
    });
    const markers = {
      dash: (u, i) => (u.series[i].dash ? "dashed" : "solid"),
      fill: (u, i) => (u.series[i].width ? "transparent" : b.fill),
    };
    const ticks = (u, splits) => {  // whole steps only (STYLE.step_incrs); what was drawn, for the tests
      el.dataset.xticks = splits.join(",");
      return splits.map((v) => (Number.isInteger(v) ? String(v) : ""));
    };
    return { width, height: 260, series, scales: { x: { time: false } },
             axes: [{ label: "step", incrs: STYLE.step_incrs, values: ticks },
                    { label: [...new Set(runs.map((r) => r.axis || "loss"))].join(" / ") }],
             legend: { live: false, markers } };
  }

  function lossChart(el, runs) {
    el.innerHTML = "";
    const width = () => Math.max(280, el.clientWidth || 600);
    const u = new uPlot(chartOptions(el, runs, width()), chartData(runs), el);
    el.dataset.points = String(count(runs));
    el.dataset.base = String(runs.reduce((n, r) => n + (r.base || []).length, 0));
    window.addEventListener("resize", () => u.setSize({ width: width(), height: 260 }));
    return {
      update(newRuns) {
        u.setData(chartData(newRuns));
        el.dataset.points = String(count(newRuns));
        el.dataset.base = String(newRuns.reduce((n, r) => n + (r.base || []).length, 0));
      },
    };
  }

  async function download(url, name) {
    const blob = await (await api(url)).blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  }

  // ---- the key ----------------------------------------------------------------------------------------------
  const box = document.getElementById("keybox");
  const forget = document.getElementById("forget");
  let resolveReady, resolved = false;
  const ready = new Promise((r) => { resolveReady = r; });

  function askKey(msg) {
    sessionStorage.removeItem(KEY);
    box.hidden = false;
    forget.hidden = true;
    document.getElementById("keyerr").textContent = msg || "";
    document.getElementById("apikey").focus();
  }

  async function check() {
    try {
      const who = await json("/studio/api/whoami");
      box.hidden = true;
      forget.hidden = !needsKey;
      forget.title = "tenant " + who.tenant;
      resolved = true;
      resolveReady(who);
    } catch (e) {
      if (e.status === 0) {  // the server is down (a restart): say so, try again
        let banner = document.getElementById("down");
        if (!banner) {
          banner = Object.assign(document.createElement("p"), { id: "down", className: "err" });
          banner.setAttribute("role", "alert");
          document.getElementById("main").prepend(banner);
        }
        banner.textContent = e.message + " Retrying…";
        setTimeout(check, 3000);
      } else if (e.status !== 401) askKey(e.message);
      else return;
    }
    const banner = document.getElementById("down");
    if (banner && resolved) banner.remove();
  }

  box.addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("apikey").value.trim());
    check();
  });
  forget.addEventListener("click", () => { sessionStorage.removeItem(KEY); location.reload(); });

  async function start() {
    if (needsKey && !key()) askKey("");
    else check();
    await ready;
    await loadFragments(document);
    if (pageInit) await pageInit(args);
    body.dataset.ready = "1";
  }
  document.addEventListener("DOMContentLoaded", start);

  return { api, json, postJSON, showErr, sse, lossChart, download, loadFragments, args, ApiError,
           hook: (fn) => hooks.push(fn), page: (fn) => { pageInit = fn; } };
})();
