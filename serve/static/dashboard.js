// arbflow dashboard: polls api/dashboard and draws SVG charts (no libraries, works offline).
// The admin token comes from ?token= (sent as a Bearer header); ?refresh=<s> sets the
// polling period (default 5 s); ?window= the time window (default 1h).
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["var(--c0)", "var(--c1)", "var(--c2)", "var(--c3)", "var(--c4)"];
  const params = new URLSearchParams(window.location.search);
  const token = params.get("token") || "";
  const refreshS = Math.max(1, Number(params.get("refresh")) || 5);
  const H = 240, M = { top: 14, right: 12, bottom: 36, left: 52 };
  let W = 640; // the viewBox width of the chart being drawn: wide cards get twice as much

  function size(container) {
    W = container.closest(".wide") ? 1280 : 640;
  }

  function svgEl(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, value, attrs) {
    const t = svgEl("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
    t.textContent = value;
    return t;
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
    return v.toFixed(a >= 10 ? 1 : 2);
  }

  // A "nice" axis maximum and tick step for values up to max.
  function niceScale(max, ticks) {
    if (!(max > 0)) return { max: 1, step: 0.25 };
    const raw = max / ticks;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    return { max: Math.ceil(max / step) * step, step: step };
  }

  function frame(container, maxValue) {
    container.replaceChildren();
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" }, container);
    const scale = niceScale(maxValue, 4);
    const y = (v) => M.top + (H - M.top - M.bottom) * (1 - v / scale.max);
    for (let v = 0; v <= scale.max + scale.step / 2; v += scale.step) {
      svgEl("line", { class: "gridline", x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }, svg);
      text(svg, M.left - 6, y(v) + 4, fmt(v), { "text-anchor": "end" });
    }
    svgEl("line", { class: "axis", x1: M.left, x2: W - M.right, y1: y(0), y2: y(0) }, svg);
    return { svg: svg, y: y };
  }

  function legend(container, series) {
    if (series.length < 2) return;
    const box = document.createElement("div");
    box.className = "legend";
    series.forEach((s, i) => {
      const item = document.createElement("span");
      const sw = document.createElement("i");
      sw.style.background = s.color || COLORS[i % COLORS.length];
      item.append(sw, s.name);
      box.appendChild(item);
    });
    container.appendChild(box);
  }

  function empty(container, message) {
    size(container);
    container.replaceChildren();
    const svg = svgEl("svg", { viewBox: `0 0 ${W} 60`, class: "empty-chart" }, container);
    text(svg, W / 2, 34, message || "no data in this window", { class: "empty", "text-anchor": "middle" });
  }

  // Grouped vertical bars: categories on x, one bar per series in each group.
  function bars(container, categories, series, opts) {
    opts = opts || {};
    size(container);
    const all = series.flatMap((s) => s.values.map(Number));
    if (!categories.length || !all.some((v) => v > 0)) return empty(container, opts.empty);
    const { svg, y } = frame(container, Math.max(...all));
    const plotW = W - M.left - M.right;
    const groupW = plotW / categories.length;
    const barW = Math.max(2, (groupW * 0.78) / series.length);
    categories.forEach((cat, ci) => {
      const gx = M.left + ci * groupW + groupW * 0.11;
      series.forEach((s, si) => {
        const v = Number(s.values[ci]) || 0;
        const color = (s.colorOf && s.colorOf(ci)) || s.color || COLORS[si % COLORS.length];
        const x = gx + si * barW;
        const rect = svgEl("rect", {
          class: "bar", x: x, y: y(v), width: Math.max(1, barW - 1), height: Math.max(0, y(0) - y(v)),
          fill: color, "data-series": s.name, "data-category": cat, "data-value": v,
        }, svg);
        svgEl("title", {}, rect).textContent = `${cat} · ${s.name}: ${fmt(v)}${opts.unit || ""}`;
        if (v > 0 && series.length * categories.length <= 24) {
          text(svg, x + (barW - 1) / 2, y(v) - 3, fmt(v), { class: "value", "text-anchor": "middle" });
        }
      });
      text(svg, M.left + ci * groupW + groupW / 2, H - M.bottom + 16, cat, { "text-anchor": "middle" });
    });
    legend(container, series);
  }

  // Lines over time: xs are epoch ms, one polyline per series (a dot on each non-zero point).
  function lines(container, xs, series, opts) {
    opts = opts || {};
    size(container);
    const all = series.flatMap((s) => s.values.map(Number));
    if (!xs.length || !all.some((v) => v > 0)) return empty(container, opts.empty);
    const { svg, y } = frame(container, Math.max(...all));
    const x0 = xs[0], x1 = xs[xs.length - 1];
    const x = (t) => M.left + (W - M.left - M.right) * (x1 > x0 ? (t - x0) / (x1 - x0) : 0.5);
    const labels = Math.min(6, xs.length);
    for (let i = 0; i < labels; i++) {
      const t = xs[Math.round((i * (xs.length - 1)) / Math.max(1, labels - 1))];
      const d = new Date(t);
      const label = d.toISOString().slice(11, 16);
      text(svg, x(t), H - M.bottom + 16, label, { "text-anchor": "middle" });
    }
    series.forEach((s, si) => {
      const color = s.color || COLORS[si % COLORS.length];
      const pts = xs.map((t, i) => `${x(t).toFixed(1)},${y(Number(s.values[i]) || 0).toFixed(1)}`);
      svgEl("polyline", { class: "line", points: pts.join(" "), stroke: color, "data-series": s.name }, svg);
      xs.forEach((t, i) => {
        const v = Number(s.values[i]) || 0;
        if (v <= 0) return;
        const dot = svgEl("circle", {
          class: "dot", cx: x(t), cy: y(v), r: 2.5, fill: color, "data-series": s.name, "data-value": v,
        }, svg);
        svgEl("title", {}, dot).textContent = `${new Date(t).toISOString().slice(11, 16)} ${s.name}: ${v}`;
      });
    });
    text(svg, W - M.right, H - 4, "UTC", { "text-anchor": "end" });
    legend(container, series);
  }

  function plot(id) {
    return document.querySelector(`#${id} .plot`);
  }

  function pct(v) {
    return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%";
  }

  function tiles(s) {
    const items = [
      ["sent", fmt(s.sent)], ["skipped", fmt(s.skipped)], ["failed", fmt(s.failed)],
      ["missed while delayed", fmt(s.missed)], ["digests sent", fmt(s.digests_sent)],
      ["429s", fmt(s.throttled_429)], ["engagement", pct(s.engagement_rate)],
      ["p50 latency", s.p50_ms == null ? "–" : fmt(s.p50_ms) + " ms"],
      ["p99 latency", s.p99_ms == null ? "–" : fmt(s.p99_ms) + " ms"],
      ["active sessions", fmt(s.active_sessions)], ["new users", fmt(s.new_users)],
      ["returning users", fmt(s.returning_users)], ["/opportunities views", fmt(s.list_views)],
      ["details opened", fmt(s.details_opened)],
    ];
    const box = document.getElementById("tiles");
    box.replaceChildren(...items.map(([label, value]) => {
      const tile = document.createElement("div");
      tile.className = "tile";
      tile.dataset.figure = label;
      const b = document.createElement("b");
      b.textContent = value;
      const span = document.createElement("span");
      span.textContent = label;
      tile.append(b, span);
      return tile;
    }));
  }

  // The edges of pushable opportunities per kind, each with its unit (a table, not a chart).
  function edgeTable(container, kinds) {
    container.replaceChildren();
    if (!kinds.length) return empty(container, "no opportunities in this window");
    const table = document.createElement("table");
    table.className = "edges";
    const head = ["kind", "unit", "pushable", "mean", "max", "bps/day"];
    const tr = table.createTHead().insertRow();
    head.forEach((h) => {
      const th = document.createElement("th");
      th.textContent = h;
      tr.appendChild(th);
    });
    const body = table.createTBody();
    kinds.forEach((r) => {
      const row = body.insertRow();
      row.dataset.kind = r.kind;
      [r.kind, r.unit, fmt(r.pushable), fmt(r.mean_net), fmt(r.max_net), fmt(r.mean_bps_per_day)]
        .forEach((v, i) => {
          const td = row.insertCell();
          td.textContent = v;
          if (i === 1) td.className = "unit";
          td.dataset.column = head[i];
        });
    });
    container.appendChild(table);
  }

  // One experiment: each variant's engagement rate (%) as a bar with its 95% interval as a
  // whisker, n users under it; the verdicts (difference from the control, p-value) below.
  function ciBars(container, exp) {
    size(container);
    const vs = exp.variants;
    if (!vs.some((v) => v.users > 0)) return empty(container, "no pushes to this experiment's users in this window");
    const top = Math.max(...vs.map((v) => 100 * (v.rate_high != null ? v.rate_high : v.engagement_rate || 0)));
    const { svg, y } = frame(container, top);
    const groupW = (W - M.left - M.right) / vs.length;
    const barW = Math.min(90, groupW * 0.5);
    vs.forEach((v, i) => {
      const cx = M.left + i * groupW + groupW / 2;
      const rate = 100 * (v.engagement_rate || 0);
      const rect = svgEl("rect", {
        class: "bar", x: cx - barW / 2, y: y(rate), width: barW, height: Math.max(0, y(0) - y(rate)),
        fill: COLORS[i % COLORS.length], "data-series": v.variant, "data-value": rate,
      }, svg);
      const ci = v.rate_low == null ? "" : ` [${pct(v.rate_low)}, ${pct(v.rate_high)}]`;
      svgEl("title", {}, rect).textContent =
        `${v.variant}: ${pct(v.engagement_rate)}${ci} · ${v.engaged}/${v.pushes_sent} pushes, ${v.users} users`;
      if (v.rate_low != null) {
        const lo = y(100 * v.rate_low), hi = y(100 * v.rate_high);
        svgEl("line", { class: "whisker", x1: cx, x2: cx, y1: lo, y2: hi, "data-variant": v.variant }, svg);
        svgEl("line", { class: "whisker", x1: cx - 8, x2: cx + 8, y1: lo, y2: lo }, svg);
        svgEl("line", { class: "whisker", x1: cx - 8, x2: cx + 8, y1: hi, y2: hi }, svg);
      }
      text(svg, cx + barW / 2 + 4, y(rate) + 4, pct(v.engagement_rate), { class: "value" });
      const label = `${v.variant}${v.control ? " (control)" : ""} · n=${v.users}`;
      text(svg, cx, H - M.bottom + 16, label, { "text-anchor": "middle" });
    });
    text(svg, M.left, M.top - 2, "engagement %", {});
  }

  function experiments(list) {
    const box = document.getElementById("experiments");
    const ids = list.map((e) => "chart-exp-" + e.experiment.replace(/[^A-Za-z0-9_-]/g, "_"));
    [...box.children].forEach((c) => { if (!ids.includes(c.id)) c.remove(); });
    list.forEach((exp, i) => {
      let card = document.getElementById(ids[i]);
      if (!card) {
        card = document.createElement("figure");
        card.className = "card";
        card.id = ids[i];
        const cap = document.createElement("figcaption");
        cap.textContent = `Experiment ${exp.experiment}: engagement per variant (95% CI)`;
        const plotBox = document.createElement("div");
        plotBox.className = "plot";
        const verdict = document.createElement("p");
        verdict.className = "verdict";
        card.append(cap, plotBox, verdict);
        box.appendChild(card);
      }
      ciBars(card.querySelector(".plot"), exp);
      card.querySelector(".verdict").textContent = (exp.verdicts || []).join(" · ");
    });
  }

  function render(d) {
    tiles(d.summary);
    experiments(d.experiments || []);
    const minutes = d.deliveries_per_minute;
    lines(plot("chart-deliveries"), minutes.map((r) => Date.parse(r.minute)), [
      { name: "sent", values: minutes.map((r) => r.sent) },
      { name: "skipped", values: minutes.map((r) => r.skipped) },
      { name: "failed", values: minutes.map((r) => r.failed + r.blocked) },
      { name: "429s", values: minutes.map((r) => r.throttled_429) },
    ], { empty: "no deliveries in this window" });
    const kinds = d.opportunities_by_kind;
    bars(plot("chart-opp-kind"), kinds.map((r) => r.kind), [
      { name: "opened", values: kinds.map((r) => r.opened) },
      { name: "pushable", values: kinds.map((r) => r.pushable) },
      { name: "flagged", values: kinds.map((r) => r.flagged) },
      { name: "closed", values: kinds.map((r) => r.closed) },
    ], { empty: "no opportunities in this window" });
    edgeTable(plot("table-edges"), kinds);
    // each kind in its own unit: never one axis for a spot edge and a funding return
    const buckets = d.opportunities_by_edge;
    const spot = buckets.filter((r) => r.kind === "spot_spread");
    bars(plot("chart-opp-spot"), spot.map((r) => r.bucket), [
      { name: "pushable", values: spot.map((r) => r.opportunities) },
    ], { unit: " bps", empty: "no pushable spot spread in this window" });
    const funding = buckets.filter((r) => r.kind === "funding_rate");
    bars(plot("chart-opp-funding"), funding.map((r) => r.bucket), [
      { name: "pushable", values: funding.map((r) => r.opportunities) },
    ], { empty: "no pushable funding carry in this window" });
    const flagged = d.flagged_opportunities;
    const flags = [...new Set(flagged.map((r) => r.flag))];
    const flaggedKinds = [...new Set(flagged.map((r) => r.kind))];
    bars(plot("chart-flagged"), flags, flaggedKinds.map((k) => ({
      name: k,
      values: flags.map((f) => (flagged.find((r) => r.kind === k && r.flag === f) || {}).opportunities || 0),
    })), { empty: "nothing flagged in this window" });
    const funnel = d.onboarding_funnel;
    bars(plot("chart-funnel"), funnel.map((r) => r.step.replace("_", " ")), [
      { name: "reached", values: funnel.map((r) => r.reached) },
    ], { empty: "nobody opted in during this window" });
    const lat = d.latency_percentiles.filter((r) => r.n > 0);
    bars(plot("chart-latency"), lat.map((r) => r.tier), [
      { name: "p50", values: lat.map((r) => r.p50_ms) },
      { name: "p90", values: lat.map((r) => r.p90_ms) },
      { name: "p99", values: lat.map((r) => r.p99_ms) },
    ], { unit: " ms", empty: "nothing sent in this window" });
    const fresh = d.data_freshness;
    bars(plot("chart-freshness"), fresh.map((r) => r.exchange), [
      {
        name: "age (s)", values: fresh.map((r) => r.age_s),
        colorOf: (i) => (fresh[i].age_s > d.stale_after_s ? "var(--stale)" : "var(--c3)"),
      },
    ], { unit: " s", empty: "no quotes in this window" });
  }

  const status = document.getElementById("status");
  const windowSelect = document.getElementById("window");
  if (params.get("window")) windowSelect.value = params.get("window");
  let timer = null;

  async function refresh() {
    clearTimeout(timer);
    try {
      const url = "api/dashboard?window=" + encodeURIComponent(windowSelect.value || "1h");
      const resp = await fetch(url, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
      if (resp.status === 401) throw new Error("admin token missing or wrong (open /dashboard?token=…)");
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const data = await resp.json();
      render(data);
      document.body.dataset.state = "ok";
      document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
      status.textContent = "updated " + new Date().toLocaleTimeString() + " · every " + refreshS + " s";
    } catch (err) {
      document.body.dataset.state = "error";
      status.textContent = String(err.message || err);
    } finally {
      timer = setTimeout(refresh, refreshS * 1000);
    }
  }

  windowSelect.addEventListener("change", refresh);
  refresh();
})();
