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

  // ---- loss charts (uPlot): each run a colour, training solid, validation dashed -------------------------------
  const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#4b5563"];

  function chartData(runs) {
    const steps = [...new Set(runs.flatMap((r) => [...r.train, ...r.valid].map((p) => p[0])))].sort((a, b) => a - b);
    const at = new Map(steps.map((s, i) => [s, i]));
    const data = [steps];
    for (const r of runs) {
      for (const part of [r.train, r.valid]) {
        const ys = new Array(steps.length).fill(null);
        for (const [s, y] of part) ys[at.get(s)] = y;
        data.push(ys);
      }
    }
    return data;
  }

  function lossChart(el, runs) {
    el.innerHTML = "";
    const series = [{ label: "step" }];
    runs.forEach((r, i) => {
      const c = COLORS[i % COLORS.length];
      const who = runs.length > 1 ? r.name + " " : "";
      series.push({ label: who + "train", stroke: c, width: 2, spanGaps: true, points: { show: false } });
      series.push({ label: who + "valid", stroke: c, width: 2, dash: [6, 4], spanGaps: true,
                    points: { show: true, size: 6, fill: c } });
    });
    const width = () => Math.max(280, el.clientWidth || 600);
    const opts = { width: width(), height: 260, series, scales: { x: { time: false } },
                   axes: [{ label: "step" }, { label: "loss" }], legend: { live: false } };
    const u = new uPlot(opts, chartData(runs), el);
    const points = runs.reduce((n, r) => n + r.train.length + r.valid.length, 0);
    el.dataset.points = String(points);
    window.addEventListener("resize", () => u.setSize({ width: width(), height: 260 }));
    return {
      update(newRuns) {
        u.setData(chartData(newRuns));
        el.dataset.points = String(newRuns.reduce((n, r) => n + r.train.length + r.valid.length, 0));
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
