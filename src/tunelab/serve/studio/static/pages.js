// tunelab studio: what each page does (studio.js loads the fragments first, then these run).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs = {}, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const fmtBytes = (n) => {
    for (const [u, s] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 1024]]) if (n >= s) return (n / s).toFixed(1) + " " + u;
    return n + " B";
  };
  const anchor = (c) => `c-${c.start}-${c.end}-` + c.source.replace(/[^A-Za-z0-9]/g, "_");

  // An API error next to the control it names (error.param), else in the form's own error line.
  function fieldError(form, e, fallback) {
    form.querySelectorAll(".field-err").forEach((x) => x.remove());
    form.querySelectorAll("[aria-invalid]").forEach((x) => x.removeAttribute("aria-invalid"));
    if (!e) { TL.showErr(fallback, null); return; }
    const name = (e.param || "").split(".").pop();
    const input = name && (form.querySelector(`[name="${name}"]`) || form.querySelector(`#${name}`));
    if (input) {
      input.setAttribute("aria-invalid", "true");
      const span = el("span", { class: "err field-err", role: "alert" }, e.message);
      input.after(span);
      input.focus();
      TL.showErr(fallback, null);
    } else TL.showErr(fallback, e);
  }

  // ---- charts, overlay, export: inside fragments ---------------------------------------------------------------
  TL.hook(async (root) => {
    for (const c of root.querySelectorAll("[data-chart-runs]")) {
      const names = c.dataset.chartRuns.split(",").filter(Boolean);
      if (!names.length) { c.textContent = "No run picked: tick two or more on the Runs page."; continue; }
      try {
        const runs = await Promise.all(names.map((n) => TL.json(`/studio/api/runs/${encodeURIComponent(n)}/metrics`)));
        TL.lossChart(c, runs);
      } catch (e) { TL.showErr(c.nextElementSibling, e); }
    }
    const overlay = root.querySelector("#overlay");
    if (overlay) overlay.addEventListener("submit", (ev) => {
      if (overlay.querySelectorAll("input[name=runs]:checked").length < 2) {
        ev.preventDefault();
        TL.showErr($("overlay-err"), new Error("pick two or more runs to overlay"));
      }
    });
    for (const box of root.querySelectorAll("[data-export-run]")) {
      const err = box.querySelector(".err"), out = box.querySelector(".export-out");
      box.querySelectorAll("[data-export]").forEach((b) => b.addEventListener("click", async () => {
        TL.showErr(err, null);
        b.disabled = true;
        out.textContent = `exporting ${b.dataset.export}…`;
        try {
          const res = await TL.postJSON(`/studio/api/runs/${encodeURIComponent(box.dataset.exportRun)}/export`,
                                        { to: b.dataset.export });
          out.textContent = "";
          out.append(el("p", {}, `${res.to} (${res.quant}) written to ${res.out}:`));
          const ul = el("ul", { class: "downloads" });
          for (const f of res.files) {
            const a = el("a", { href: f.url, "data-download": f.name.split("/").pop() }, `download ${f.name}`);
            a.addEventListener("click", (ev) => { ev.preventDefault(); TL.download(f.url, a.dataset.download).catch((x) => TL.showErr(err, x)); });
            const li = el("li");
            li.append(a, ` (${fmtBytes(f.bytes)})`);
            ul.append(li);
          }
          out.append(ul);
          for (const n of res.notes) out.append(el("p", { class: "warn" }, "note: " + n));
        } catch (e) { out.textContent = ""; TL.showErr(err, e); }
        b.disabled = false;
      }));
    }
    const form = root.querySelector("#newjob");
    if (form) newJob(form);
    bindUpload(root.querySelector("#upload"));
    const cols = root.querySelector("#columns");
    if (cols) columnsForm(cols);
  });

  // ---- datasets: upload; a file of unknown fields goes to its column mapping --------------------------------
  function bindUpload(upload) {
    if (!upload || upload.dataset.bound) return;
    upload.dataset.bound = "1";
    upload.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const fd = new FormData();
      fd.append("file", $("upfile").files[0]);
      fd.append("purpose", "fine-tune");
      fieldError(upload, null, $("uperr"));
      try {
        const f = await TL.json("/v1/files", { method: "POST", body: fd });
        if (f.status === "processed") { location.href = "/datasets/" + f.id; return; }
        try {  // its records read, only their fields are no known format: map them
          await TL.api(`/studio/f/files/${encodeURIComponent(f.id)}/columns`);
          location.href = `/datasets/${encodeURIComponent(f.id)}/columns`;
        } catch (e) {
          fieldError(upload, { param: "file", message: "refused: " + f.status_details }, $("uperr"));
          await TL.loadFragments(document);
        }
      } catch (e) { fieldError(upload, e.param ? e : { param: "file", message: e.message }, $("uperr")); }
    });
  }
  bindUpload($("upload"));

  // the column-mapping form: the roles of the format picked, each a select of the file's fields
  function columnsForm(form) {
    const formats = JSON.parse(form.dataset.formats);
    const show = () => {
      const f = formats[form.elements.format.value];
      form.querySelectorAll(".role").forEach((span) => {
        const role = span.dataset.role, on = f.roles.includes(role) || f.optional.includes(role);
        span.hidden = !on;
        span.querySelector("label").textContent = role + (f.optional.includes(role) ? " (optional)" : "");
      });
    };
    form.elements.format.addEventListener("change", show);
    show();
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = formats[form.elements.format.value], columns = {};
      for (const role of [...f.roles, ...f.optional]) {
        const v = form.elements[role].value;
        if (v) columns[role] = v;
        else if (f.roles.includes(role)) {
          fieldError(form, { param: role, message: `pick the field that holds the ${role}` }, $("col-err"));
          return;
        }
      }
      fieldError(form, null, $("col-err"));
      $("col-save").disabled = true;
      try {
        await TL.postJSON(`/studio/api/files/${encodeURIComponent(form.dataset.file)}/columns`, { columns });
        location.href = "/new?file=" + encodeURIComponent(form.dataset.file);
      } catch (e) {
        fieldError(form, e.param && e.param.startsWith("columns.") ? e : { message: e.message }, $("col-err"));
        $("col-save").disabled = false;
      }
    });
  }

  // ---- new fine-tune: the live estimate, then the job ------------------------------------------------------
  function newJob(form) {
    const v = (n) => form.elements[n].value;
    const box = $("estimate"), start = $("start");
    let timer = null, seq = 0;
    async function estimate() {
      const mine = ++seq;
      const q = new URLSearchParams({ model: v("model"), method: v("method"), batch: v("batch_size"), seq: v("seq") });
      const trains = form.dataset.jobMethod, picked = v("method");  // trains: a server-pinned method, or ""
      start.disabled = !!trains && picked !== trains;
      $("method-note").textContent = !trains ? `The job trains ${picked}.` :
        picked === trains ? `This server's jobs train ${trains}.` :
        `This server's jobs train ${trains} (its job settings decide): the estimate shows ${picked}; ` +
        `start ${picked} with \`tunelab train\` or pick ${trains} to start here.`;
      try {
        const e = await TL.json("/studio/api/memory?" + q);
        if (mine !== seq) return;
        box.innerHTML = '<h2 id="h-est">Memory estimate</h2>';
        const avail = e.available == null ? "unknown" : fmtBytes(e.available);
        const p = el("p", { class: e.fits === false ? "warn" : "ok", id: "fit" },
          e.fits === false ? `Will not fit: about ${fmtBytes(e.total)} needed, ${avail} available on ${e.device}.`
                           : `About ${fmtBytes(e.total)} at peak on ${e.device} (${avail} available)` +
                             (e.fits ? ": fits." : "."));
        box.append(p);
        const t = el("table");
        t.innerHTML = '<caption>by component (computed from the model\'s config)</caption><thead><tr><th scope="col">component</th><th scope="col">memory</th><th scope="col">how</th></tr></thead>';
        const tb = el("tbody");
        for (const r of e.rows) {
          const tr = el("tr");
          tr.append(el("td", {}, r.component), el("td", {}, fmtBytes(r.bytes)), el("td", {}, r.how));
          tb.append(tr);
        }
        t.append(tb);
        const wrap = el("div", { class: "scroll" });
        wrap.append(t);
        box.append(wrap);
      } catch (e) {
        if (mine !== seq) return;
        box.innerHTML = '<h2 id="h-est">Memory estimate</h2>';
        box.append(el("p", { class: "err", role: "alert" }, e.message));
      }
    }
    form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(estimate, 300); });
    estimate();
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const hp = { n_epochs: +v("n_epochs"), batch_size: +v("batch_size"), learning_rate_multiplier: +v("learning_rate_multiplier"),
                   finetuning_type: v("method") };
      const req = { model: v("model"), training_file: v("training_file"), hyperparameters: hp };
      if (v("validation_file")) req.validation_file = v("validation_file");
      if (v("suffix")) req.suffix = v("suffix");
      fieldError(form, null, $("new-err"));
      start.disabled = true;
      try {
        const job = await TL.postJSON("/v1/fine_tuning/jobs", req);
        location.href = "/jobs/" + job.id;
      } catch (e) { fieldError(form, e, $("new-err")); start.disabled = false; }
    });
  }

  // ---- job: live chart over SSE, log, progress, cancel -----------------------------------------------------
  async function jobPage(id) {
    const status = $("job-status"), err = $("job-err");
    const show = (job) => {
      status.textContent = job.status;
      status.className = "badge " + job.status;
      status.dataset.status = job.status;
      $("job-model").textContent = ` ${job.model.split("/").pop()} → ${job.fine_tuned_model || "ft run"}` +
        ` · ${job.hyperparameters.n_epochs} epochs, batch ${job.hyperparameters.batch_size}`;
      $("job-cancel").hidden = ["succeeded", "failed", "cancelled"].includes(job.status);
      const res = $("job-result");
      res.textContent = "";
      if (job.fine_tuned_model) {
        res.append(el("a", { href: "/runs/" + job.fine_tuned_model }, "open run " + job.fine_tuned_model), " · ",
                   el("a", { href: "/chat?model=" + encodeURIComponent(job.fine_tuned_model) }, "chat with it"));
      }
      if (job.error && job.error.message) TL.showErr(err, new Error("failed: " + job.error.message));
    };
    let job;
    try { job = await TL.json(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}`); } catch (e) { TL.showErr(err, e); return; }
    show(job);
    $("job-cancel").addEventListener("click", async () => {
      try { show(await TL.postJSON(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}/cancel`, {})); }
      catch (e) { TL.showErr(err, e); }
    });
    // a reinforcement job charts its sampled reward per step (runs_data.CURVES' grpo labels), others their loss
    const rewarded = job.method && job.method.type === "reinforcement";
    const run = { name: job.fine_tuned_model || "job", train: [], valid: [],
                  ...(rewarded ? { axis: "reward", labels: ["reward (sampled)", "held-out reward (greedy)",
                                                            "base model (held-out, step 0)"] } : {}) };
    const chart = TL.lossChart($("job-chart"), [run]);
    const seen = new Set(), epochs = [];
    const nEpochs = job.hyperparameters.n_epochs;
    let draw = null;
    const onEvent = (ev) => {
      if (seen.has(ev.id)) return;  // a reconnect replays from the start
      seen.add(ev.id);
      if (ev.type === "metrics" && ev.data) {
        const d = ev.data;
        const y = rewarded ? d.reward : d.train_loss;
        if (y != null) run.train.push([d.step, y]);
        const v = rewarded ? d.heldout_reward : d.valid_loss;
        if (v != null) run.valid.push([d.step, v]);
        if (d.epoch != null) epochs.push([ev.created_at, d.epoch, d.step]);
        if (!draw) draw = setTimeout(() => {
          draw = null;
          chart.update([run]);
          $("job-points").textContent = `${run.train.length} training and ${run.valid.length} validation points`;
          progress();
        }, 100);
      } else {
        const li = el("li", { class: ev.level }, `${new Date(ev.created_at * 1000).toLocaleTimeString()} ${ev.message}`);
        $("job-log").append(li);
      }
    };
    const progress = () => {
      if (!epochs.length) return;
      const [t1, e1, step] = epochs[epochs.length - 1], [t0, e0] = epochs[0];
      $("job-progress").value = Math.min(1, e1 / nEpochs);
      const rate = t1 > t0 ? (e1 - e0) / (t1 - t0) : 0;  // epochs per second
      const left = rate > 0 ? Math.max(0, Math.round((nEpochs - e1) / rate)) : null;
      $("job-eta").textContent = `epoch ${(+e1).toFixed(2)} of ${nEpochs}, step ${step}` +
        (left != null && e1 < nEpochs ? `, about ${left} s left` : "");
    };
    for (let attempt = 0; ; attempt++) {
      try {
        for await (const data of TL.sse(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}/events?stream=true`)) {
          if (data === "[DONE]") break;
          const ev = JSON.parse(data);
          onEvent(ev);
          if (ev.type === "message") show(await TL.json(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}`));
        }
        break;
      } catch (e) {  // the server restarted or the network dropped: reconnect (events are replayed, deduplicated)
        TL.showErr(err, new Error(`${e.message} (reconnecting)`));
        await new Promise((r) => setTimeout(r, Math.min(10000, 1000 * (attempt + 1))));
      }
    }
    TL.showErr(err, null);
    job = await TL.json(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}`);
    if (job.fine_tuned_model) {  // the run's report holds the base model's validation loss: the point at step 0
      try { run.base = (await TL.json(`/studio/api/runs/${encodeURIComponent(job.fine_tuned_model)}/metrics`)).base; }
      catch (e) { /* the chart keeps its curves */ }
    }
    chart.update([run]);
    $("job-points").textContent = `${run.train.length} training and ${run.valid.length} validation points`;
    if (job.status === "succeeded") $("job-progress").value = 1;
    progress();
    show(job);
  }

  // ---- chat: two or three answers side by side ---------------------------------------------------------------
  async function fillSelects(preferModel) {
    const [models, kbs] = await Promise.all([TL.json("/v1/models"), TL.json("/studio/api/kbs")]);
    const ids = models.data.filter((m) => !m.id.startsWith("minilm")).map((m) => m.id);
    const base = ids[0], runs = ids.slice(1);
    document.querySelectorAll("[data-models]").forEach((s, i) => {
      for (const m of ids) s.append(el("option", { value: m }, m === base ? `${m.split("/").pop()} (base)` : m));
      const want = i === 0 ? base : (preferModel && ids.includes(preferModel) ? preferModel : runs[0]);
      s.value = want || base;
    });
    document.querySelectorAll("[data-kbs]").forEach((s, i) => {
      for (const k of kbs.data) s.append(el("option", { value: k.name }, k.name));
      if (i === 2 && kbs.data.length) s.value = kbs.data[0].name;
    });
    const third = document.querySelector("[name=on2]");
    if (third && kbs.data.length && runs.length) third.checked = true;
  }

  function citations(list, kb) {
    const ol = el("ol", { class: "cites", "aria-label": "citations" });
    for (const c of list) {
      const li = el("li", { value: String(c.index) });
      const a = el("a", { href: `/kb/${encodeURIComponent(kb)}#${anchor(c)}` },
                   `[${c.index}] ${c.source}${c.section ? " § " + c.section : ""}`);
      li.append(a, ` (similarity ${c.similarity})`);
      ol.append(li);
    }
    return ol;
  }

  async function answer(card, req) {
    const text = card.querySelector(".text"), err = card.querySelector(".err");
    try {
      const opts = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(req) };
      for await (const data of TL.sse("/v1/chat/completions", opts)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.citations) card.append(citations(chunk.citations, req.knowledge_base));
        const d = chunk.choices && chunk.choices[0] && chunk.choices[0].delta && chunk.choices[0].delta.content;
        if (d) text.textContent += d;
      }
    } catch (e) { TL.showErr(err, e); }
    card.dataset.done = "1";
  }

  const chat = $("chat");
  if (chat) chat.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = chat.elements, out = $("answers");
    const cols = [0, 1, 2].filter((i) => f["on" + i].checked);
    if (!cols.length) { TL.showErr($("chat-err"), new Error("tick at least one column")); return; }
    TL.showErr($("chat-err"), null);
    out.textContent = "";
    const messages = [];
    if (f.system.value.trim()) messages.push({ role: "system", content: f.system.value });
    messages.push({ role: "user", content: f.prompt.value });
    for (const i of cols) {
      const model = f["model" + i].value, kb = f["kb" + i].value;
      const card = el("article", { class: "answer", "data-col": String(i) });
      card.append(el("h2", {}, model + (kb ? ` + ${kb}` : "")), el("p", { class: "text" }), el("p", { class: "err", role: "alert" }));
      out.append(card);
      const req = { model, messages, temperature: +f.temperature.value, max_tokens: +f.max_tokens.value, stream: true };
      if (kb) req.knowledge_base = kb;
      answer(card, req);
    }
  });

  // ---- knowledge bases -----------------------------------------------------------------------------------------
  const create = $("kb-create");
  if (create) create.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const fd = new FormData();
    fd.append("name", $("kb-name").value);
    for (const file of $("kb-files").files) fd.append("files", file);
    fieldError(create, null, $("kb-err"));
    TL.showErr($("kb-err"), new Error("indexing…"));
    try {
      const kb = await TL.json("/studio/api/kbs", { method: "POST", body: fd });
      location.href = "/kb/" + encodeURIComponent(kb.name);
    } catch (e) { fieldError(create, e, $("kb-err")); }
  });

  // delete a document or the whole knowledge base (buttons of the /studio/f/kbs/NAME fragment)
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("[data-kb-delete]");
    if (!b || !confirm(b.dataset.confirm)) return;
    b.disabled = true;
    try {
      const r = await TL.json(b.dataset.kbDelete, { method: "DELETE" });
      if (r.object === "knowledge_base" || r.knowledge_base_deleted) location.href = "/kb";
      else location.reload();
    } catch (e) { b.disabled = false; TL.showErr($("kb-delete-err"), e); }
  });

  const ask = $("kb-ask");
  if (ask) ask.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = $("kb-answer"), kb = TL.args.kb;
    out.textContent = "asking…";
    fieldError(ask, null, $("ask-err"));
    try {
      const r = await TL.postJSON("/v1/chat/completions", {
        model: $("ask-model").value, knowledge_base: kb, temperature: 0, max_tokens: 64,
        messages: [{ role: "user", content: $("question").value }] });
      out.textContent = "";
      const p = el("p", { class: "text" });
      const cites = new Map((r.citations || []).map((c) => [String(c.index), c]));
      // the reply's [n] markers become links to their chunk
      for (const part of r.choices[0].message.content.split(/(\[\d+\])/)) {
        const c = cites.get(part.slice(1, -1));
        p.append(c ? el("a", { href: "#" + anchor(c) }, part) : part);
      }
      out.append(el("h2", {}, "Answer"), p, el("h3", {}, "Sources"), citations(r.citations || [], kb));
      out.querySelectorAll(".cites a").forEach((a) => a.setAttribute("href", a.getAttribute("href").replace(/^[^#]*/, "")));
    } catch (e) { out.textContent = ""; fieldError(ask, e, $("ask-err")); }
  });

  TL.page(async (args) => {
    if (args.job) jobPage(args.job);  // runs until the job ends; the page is ready now
    if (chat || ask) {
      try { await fillSelects(new URLSearchParams(location.search).get("model")); }
      catch (e) { TL.showErr($("chat-err") || $("ask-err"), e); }
    }
  });
})();
