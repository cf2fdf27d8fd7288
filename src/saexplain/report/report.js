// saexplain report: the latent table and each latent's section, rendered from the page's JSON.
// Every string from the data goes into the DOM through textContent (el() below), never as HTML.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("sx-data").textContent);
  const latents = data.latents;
  const methods = data.methods; // [explainer, scorer] pairs
  const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

  // el("td", {className: "num"}, "text" | Node, ...): an element; strings become text nodes
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "dataset") Object.assign(node.dataset, v);
      else node[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }
  const fmt = (v, d = 3) => (v === null || v === undefined ? "-" : Number(v).toFixed(d));
  const coders = data.coders || [];
  const scoreRow = (lat, e, s) => lat.scores.find((x) => x.explainer === e && x.scorer === s);
  const scoreOf = (lat, e, s) => {
    const sc = scoreRow(lat, e, s);
    return sc ? sc.value : null;
  };
  // a score cell's text: the value, "skipped" (a generic explanation, not scored on purpose) or "-"
  const scoreText = (sc) => (!sc ? "-" : sc.value !== null ? fmt(sc.value) : sc.skipped ? "skipped" : "-");
  // the score cell of the table: the value and, beside it, its shuffled control's (~)
  function scoreCell(lat, e, s) {
    const sc = scoreRow(lat, e, s);
    const td = el("td", { className: "num" }, scoreText(sc));
    if (sc && sc.skipped) { td.classList.add("skipped"); td.title = sc.error || "skipped"; }
    if (sc && sc.ctrl) {
      td.appendChild(el("span", { className: "ctrl", title: "shuffled control: the same scorer on another latent's explanation" }, " ~" + fmt(sc.ctrl.value)));
    }
    return td;
  }
  const textOf = (lat) => lat.explanations.map((x) => x.text || "").join(" \u00b7 ");

  // --- overview figures -------------------------------------------------------------------------
  function drawFigures() {
    if (typeof Plotly === "undefined") return;
    document.querySelectorAll(".plot[data-figure]").forEach((div) => {
      const fig = data.figures[Number(div.dataset.figure)];
      Plotly.newPlot(div, fig.data, fig.layout, PLOT_CONFIG);
    });
  }

  // --- the table --------------------------------------------------------------------------------
  const columns = [
    ...(coders.length > 1 ? [{ key: "coder", label: "coder", get: (l) => l.coder }] : []),
    { key: "index", label: "latent", get: (l) => l.index, num: true },
    { key: "status", label: "status", get: (l) => l.status || "" },
    { key: "freq", label: "frequency", get: (l) => (l.stats ? l.stats.freq : null), num: true, show: (v) => (v === null ? "-" : v.toPrecision(3)) },
    { key: "max", label: "max act", get: (l) => (l.stats ? l.stats.max : null), num: true, show: (v) => fmt(v, 2) },
    ...methods.map(([e, s]) => ({ key: e + "/" + s, label: e + " / " + s, get: (l) => scoreOf(l, e, s), num: true, cell: (l) => scoreCell(l, e, s) })),
    { key: "flags", label: "flags", get: (l) => l.flags.length, num: true, show: (v, l) => l.flags.join("; ") },
    { key: "text", label: "explanations", get: (l) => textOf(l) },
  ];
  // several coders: their latents grouped, each in the run's order
  const state = { sort: coders.length > 1 ? "coder" : "index", dir: 1, rows: latents.slice(), current: -1 };
  const tbody = document.querySelector("#latent-table tbody");
  const search = document.getElementById("search");
  const flagFilter = document.getElementById("flag-filter");
  const coderFilter = document.getElementById("coder-filter");
  const scoreMethod = document.getElementById("score-method");
  const minScore = document.getElementById("min-score");

  function buildControls() {
    const head = el("tr");
    for (const c of columns) {
      const th = el("th", { tabIndex: 0, title: "sort by " + c.label, dataset: { key: c.key } }, c.label);
      th.addEventListener("click", () => sortBy(c.key));
      th.addEventListener("keydown", (ev) => { if (ev.key === "Enter") sortBy(c.key); });
      head.appendChild(th);
    }
    document.querySelector("#latent-table thead").appendChild(head);
    flagFilter.appendChild(el("option", { value: "" }, "all latents"));
    flagFilter.appendChild(el("option", { value: "*" }, "any flag"));
    flagFilter.appendChild(el("option", { value: "-" }, "no flag"));
    for (const f of data.flags) flagFilter.appendChild(el("option", { value: f }, f));
    if (coderFilter && coders.length > 1) {
      coderFilter.appendChild(el("option", { value: "" }, "all coders"));
      for (const c of coders) coderFilter.appendChild(el("option", { value: c }, c));
      coderFilter.hidden = false;
      coderFilter.addEventListener("input", update);
    }
    for (const [e, s] of methods) scoreMethod.appendChild(el("option", { value: e + "/" + s }, e + " / " + s));
    if (!methods.length) { scoreMethod.hidden = true; minScore.hidden = true; }
    for (const input of [search, flagFilter, scoreMethod, minScore]) input.addEventListener("input", update);
  }

  function sortBy(key) {
    state.dir = state.sort === key ? -state.dir : (["index", "text", "status", "coder"].includes(key) ? 1 : -1);
    state.sort = key;
    update();
  }

  function matches(lat) {
    const q = search.value.trim().toLowerCase();
    if (q && !textOf(lat).toLowerCase().includes(q)) return false;
    if (coderFilter && coderFilter.value && lat.coder !== coderFilter.value) return false;
    const f = flagFilter.value;
    if (f === "*" && !lat.flags.length) return false;
    if (f === "-" && lat.flags.length) return false;
    if (f && f !== "*" && f !== "-" && !lat.flags.includes(f)) return false;
    if (minScore.value !== "" && methods.length) {
      const [e, s] = scoreMethod.value.split("/");
      const v = scoreOf(lat, e, s);
      if (v === null || v < Number(minScore.value)) return false;
    }
    return true;
  }

  function update() {
    const col = columns.find((c) => c.key === state.sort);
    const rows = latents.filter(matches);
    rows.sort((a, b) => {
      const x = col.get(a), y = col.get(b);
      if (x === y) return a.pos - b.pos;
      if (x === null) return 1; // missing values last, whatever the direction
      if (y === null) return -1;
      return (x < y ? -1 : 1) * state.dir;
    });
    state.rows = rows;
    const frag = document.createDocumentFragment();
    for (const lat of rows) {
      const tr = el("tr", { tabIndex: -1, dataset: { pos: String(lat.pos) } });
      if (lat.pos === state.current) tr.className = "current";
      for (const c of columns) {
        if (c.cell) { tr.appendChild(c.cell(lat)); continue; }
        const v = c.get(lat);
        const shown = c.show ? c.show(v, lat) : String(v === null ? "-" : v);
        tr.appendChild(el("td", { className: c.num && c.key !== "flags" ? "num" : c.key }, c.key === "text" ? shown.slice(0, 160) : shown));
      }
      tr.addEventListener("click", () => select(lat.pos));
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
    document.querySelectorAll("#latent-table th").forEach((th) => {
      th.classList.toggle("sorted", th.dataset.key === state.sort);
      th.dataset.dir = th.dataset.key === state.sort ? (state.dir > 0 ? "asc" : "desc") : "";
    });
    document.getElementById("row-count").textContent = rows.length + " of " + latents.length + " latents";
  }

  // --- one latent -------------------------------------------------------------------------------
  function tokenLine(ex, ref) {
    const line = el("div", { className: "ex" });
    const scale = ref > 0 ? ref : Math.max(...ex.a, 0);
    let argmax = -1;
    ex.a.forEach((a, i) => { if (a > 0 && (argmax < 0 || a > ex.a[argmax])) argmax = i; });
    line.appendChild(el("span", { className: "exmax" }, "max " + fmt(ex.max, 3) + (ex.q !== null && ex.q !== undefined ? " · q" + ex.q : "")));
    ex.t.forEach((tok, i) => {
      const a = ex.a[i];
      const alpha = scale > 0 ? Math.min(1, Math.max(0, a / scale)) : 0;
      const span = el("span", { className: "tok", title: "activation " + a, dataset: { act: String(a) } }, tok);
      span.style.backgroundColor = "rgba(255, 140, 0, " + alpha.toFixed(3) + ")";
      if (i === argmax) span.classList.add("maxtok");
      line.appendChild(span);
    });
    return line;
  }

  function plot(div, traces, layout) {
    if (typeof Plotly === "undefined") return;
    Plotly.newPlot(div, traces, Object.assign({ height: 220, margin: { l: 45, r: 10, t: 30, b: 35 }, template: undefined, font: { size: 11 } }, layout), PLOT_CONFIG);
  }

  function tokenTable(name, list) {
    const t = el("table", { className: "tokens" }, el("tr", {}, el("th", { colSpan: 2 }, name)));
    for (const item of list) t.appendChild(el("tr", {}, el("td", { className: "tokcell" }, String(item.token)), el("td", { className: "num" }, fmt(item.value, 3))));
    return t;
  }
  const isTokenList = (v) => Array.isArray(v) && v.length > 0 && v.every((x) => x && typeof x === "object" && "token" in x && "value" in x);

  function evidenceBlocks(owner, evidence, into) {
    // token lists (logit lens, token change) as tables; selfexplain sweeps as curves; the rest as JSON
    if (!evidence) return;
    const rest = {};
    const lens = el("div", { className: "lens" });
    for (const [k, v] of Object.entries(evidence)) {
      if (isTokenList(v)) lens.appendChild(tokenTable(owner + ": " + k, v));
      else if (k === "prompts" && v && typeof v === "object") curves(owner, v, into);
      else rest[k] = v;
    }
    if (lens.childNodes.length) into.appendChild(lens);
    if (Object.keys(rest).length) {
      into.appendChild(el("details", {}, el("summary", {}, owner + " evidence"), el("pre", {}, JSON.stringify(rest, null, 2))));
    }
  }

  function curves(owner, prompts, into) {
    const entries = Array.isArray(prompts) ? prompts.map((p, i) => [String(i), p]) : Object.entries(prompts);
    const traces = [];
    for (const [name, p] of entries) {
      if (!p || !Array.isArray(p.scales)) continue;
      for (const metric of ["selfsim", "entropy", "composite"]) {
        if (Array.isArray(p[metric])) traces.push({ x: p.scales, y: p[metric], mode: "lines+markers", name: name + " " + metric });
      }
    }
    if (!traces.length) return;
    const div = el("div", { className: "plot wide" });
    into.appendChild(el("h4", {}, owner + ": metrics against scale"));
    into.appendChild(div);
    plot(div, traces, { xaxis: { title: { text: "scale" } }, height: 260 });
  }

  function render(lat) {
    const box = document.getElementById("latent-detail");
    const parts = [];
    parts.push(el("h2", {}, "Latent " + lat.index + " ", el("span", { className: "muted" }, lat.coder + " · " + lat.hook)));
    const facts = ["status " + (lat.status || "-") + (lat.reason ? ": " + lat.reason : "")];
    if (lat.stats) facts.push("fired on " + lat.stats.count + " of " + lat.stats.n_tokens + " tokens (" + lat.stats.freq.toPrecision(3) + "), max " + fmt(lat.stats.max) + ", mean " + fmt(lat.stats.mean));
    for (const [k, v] of Object.entries(lat.info)) facts.push(k + ": " + v);
    parts.push(el("p", { className: "facts" }, facts.join(" · ")));
    if (lat.flags.length) parts.push(el("p", { className: "flags" }, "Flags: " + lat.flags.join("; ")));

    // explanations side by side, each with its scores
    const cards = el("div", { className: "cards" });
    for (const x of lat.explanations) {
      const card = el("div", { className: "card" }, el("h3", {}, x.explainer));
      card.appendChild(x.text !== null ? el("p", { className: "explanation" }, x.text) : el("p", { className: "err" }, x.status + (x.error ? ": " + x.error : "")));
      card.appendChild(el("p", { className: "muted" }, x.tokens + " tokens, $" + Number(x.cost).toFixed(4)));
      const rows = lat.scores.filter((s) => s.explainer === x.explainer);
      const ctrl = rows.map((s) => s.ctrl).find((c) => c && c.text !== null);
      if (ctrl) {
        // the control scored here: another latent's explanation, given to this latent's scorers
        card.appendChild(el("p", { className: "ctrl-text" }, "Shuffled control: ", el("q", {}, ctrl.text), " (explanation of " + (ctrl.from || "another latent") + ")"));
      }
      const withCtrl = rows.some((s) => s.ctrl);
      if (rows.length) {
        const head = el("tr", {}, el("th", {}, "scorer"), el("th", {}, "score"));
        if (withCtrl) head.appendChild(el("th", { title: "the same scorer on the shuffled control" }, "shuffled"));
        head.appendChild(el("th", {}, "answers (errors)"));
        const t = el("table", { className: "scores" }, head);
        for (const s of rows) {
          const value = s.value !== null ? fmt(s.value) : s.skipped ? "skipped" : s.status + (s.error ? ": " + s.error : "");
          const cell = el("td", { className: s.skipped ? "num skipped" : "num", title: s.skipped ? s.error : "" }, value);
          if (s.constant) cell.appendChild(el("span", { className: "err", title: "the scorer gave one answer to every item" }, " constant: " + s.constant));
          const tr = el("tr", { title: Object.entries(s.metrics).map(([k, v]) => k + "=" + v).join(", ") }, el("td", {}, s.scorer), cell);
          if (withCtrl) {
            const c = s.ctrl;
            const text = !c ? "-" : c.value !== null ? fmt(c.value) : (c.status || "-") + (c.error ? ": " + c.error : "");
            tr.appendChild(el("td", { className: "num ctrl", title: c && c.from ? "explanation of " + c.from : "" }, text));
          }
          tr.appendChild(el("td", { className: "num" }, s.n + " (" + s.n_err + ")"));
          t.appendChild(tr);
        }
        card.appendChild(t);
      }
      cards.appendChild(card);
    }
    if (lat.explanations.length) parts.push(el("h3", {}, "Explanations and scores"), cards);

    const plots = el("div", { className: "plots" });
    const acts = lat.examples.filter((e) => e.g !== "negative").flatMap((e) => e.a.filter((a) => a > 0));
    const histDiv = el("div", { className: "plot" });
    if (acts.length) plots.appendChild(histDiv);
    const decileDivs = [];
    for (const s of lat.scores) {
      if (!s.deciles.length) continue;
      const div = el("div", { className: "plot" });
      decileDivs.push([div, s]);
      plots.appendChild(div);
    }
    if (plots.childNodes.length) parts.push(el("h3", {}, "Activations and accuracy per decile"), plots);
    const evidence = el("div", {});
    parts.push(evidence);

    const ref = lat.stats && lat.stats.max ? lat.stats.max : 0;
    for (const [group, label] of [["top", "Top activating examples"], ["sampled", "Sampled (held-out) examples"], ["negative", "Non-activating examples"]]) {
      const exs = lat.examples.filter((e) => e.g === group);
      if (!exs.length) continue;
      parts.push(el("h3", {}, label + " ", el("span", { className: "muted" }, "(" + exs.length + ")")));
      const list = el("div", { className: "examples" });
      for (const ex of exs) list.appendChild(tokenLine(ex, ref));
      parts.push(list);
    }
    box.replaceChildren(...parts);
    // plots once their divs are in the page (plotly measures them)
    if (acts.length) plot(histDiv, [{ type: "histogram", x: acts, marker: { color: "#f58518" }, nbinsx: 30 }], { title: { text: "activations in the shown examples", font: { size: 12 } }, width: 340 });
    for (const [div, s] of decileDivs) {
      const x = s.deciles.map((d) => (d[0] < 0 ? "neg" : "q" + d[0]));
      const y = s.deciles.map((d) => d[1] / d[2]);
      const text = s.deciles.map((d) => d[1] + "/" + d[2]);
      plot(div, [{ type: "bar", x: x, y: y, text: text, hovertemplate: "%{x}: %{y:.2f} (%{text})<extra></extra>", marker: { color: "#4c78a8" } }], { title: { text: s.explainer + " / " + s.scorer + ": accuracy", font: { size: 12 } }, yaxis: { range: [0, 1] }, width: 340 });
    }
    for (const x of lat.explanations) evidenceBlocks(x.explainer, x.evidence, evidence);
    for (const s of lat.scores) evidenceBlocks(s.explainer + " / " + s.scorer, s.evidence, evidence);
  }

  function select(pos, scroll) {
    const lat = latents[pos];
    if (!lat) return;
    state.current = pos;
    tbody.querySelectorAll("tr.current").forEach((tr) => tr.classList.remove("current"));
    const row = tbody.querySelector('tr[data-pos="' + pos + '"]');
    if (row) {
      row.classList.add("current");
      if (scroll) row.scrollIntoView({ block: "nearest" });
    }
    render(lat);
    if (location.hash !== "#latent-" + pos) history.replaceState(null, "", "#latent-" + pos);
  }

  function step(delta) {
    if (!state.rows.length) return;
    let i = state.rows.findIndex((l) => l.pos === state.current);
    i = i < 0 ? (delta > 0 ? 0 : state.rows.length - 1) : Math.min(state.rows.length - 1, Math.max(0, i + delta));
    select(state.rows[i].pos, true);
  }

  document.addEventListener("keydown", (ev) => {
    const typing = ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement;
    if (ev.key === "Escape" && typing) { ev.target.blur(); return; }
    if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "j" || ev.key === "ArrowDown") { step(1); ev.preventDefault(); }
    else if (ev.key === "k" || ev.key === "ArrowUp") { step(-1); ev.preventDefault(); }
    else if (ev.key === "/") { search.focus(); ev.preventDefault(); }
  });

  buildControls();
  update();
  drawFigures();
  const m = /^#latent-(\d+)$/.exec(location.hash);
  if (m) select(Number(m[1]), true);
  window.sxReady = true; // the benchmark and the browser tests wait for this
  document.body.dataset.ready = "1";
})();
