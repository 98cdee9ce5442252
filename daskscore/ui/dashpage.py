"""The HTML of the daskscore page (:mod:`daskscore.ui.dashboard` serves it): one section per
job, as Spark's stage page is for a stage.

Each job shows its verdict (the report's words: ``Completed with failures`` when items
failed, red when none succeeded), its name (deployment, input, output), a progress bar with
the ETA, a throughput sparkline (inline SVG, from the ``history`` points), each worker busy
or idle with the mini-batches of its task and how long it has run, the slow ``run()`` calls
in flight, the failures so far (mini-batch, files, status, tries, error, the traceback in a
``<details>``), and its logs and report (``file://`` links, and their paths as text: a page
served over HTTP may not open them).  The page fetches only its own ``status.json``, every
two seconds; a traceback left open stays open across refreshes.
"""

from __future__ import annotations

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>daskscore jobs</title>
<link rel="icon" href="data:,">
<style>
body { font: 14px/1.5 system-ui, sans-serif; margin: 24px; color: #1f2328; max-width: 1200px; }
h1 { font-size: 20px; margin: 0 0 4px; } .note { color: #656d76; margin: 0 0 16px; }
.job { border: 1px solid #d0d7de; border-radius: 8px; padding: 12px 16px; margin: 0 0 16px;
  overflow-x: auto; }
.job h2 { font-size: 16px; margin: 0; display: flex; gap: 10px; align-items: center; }
.where, .id { color: #656d76; font-size: 13px; overflow-wrap: anywhere; }
.id { font-family: ui-monospace, monospace; }
.verdict { color: #fff; border-radius: 10px; padding: 1px 8px; font-size: 13px;
  background: #6e7781; white-space: nowrap; }
.tone-run .verdict { background: #0969da; } .tone-ok .verdict { background: #1a7f37; }
.tone-warn .verdict { background: #9a6700; } .tone-bad .verdict { background: #cf222e; }
.row { display: flex; gap: 16px; align-items: center; margin: 8px 0; flex-wrap: wrap; }
.bar { width: 420px; height: 14px; background: #eaeef2; border-radius: 7px; overflow: hidden; }
.fill { height: 100%; background: #0969da; width: 0; }
.tone-ok .fill { background: #1a7f37; } .tone-warn .fill { background: #9a6700; }
.tone-bad .fill { background: #cf222e; }
.counts { font-variant-numeric: tabular-nums; } .bad { color: #cf222e; font-weight: 600; }
svg.spark { width: 240px; height: 36px; background: #f6f8fa; border-radius: 4px; }
svg.spark polyline { fill: none; stroke: #0969da; stroke-width: 1.5; }
h3 { font-size: 14px; margin: 12px 0 4px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 10px; text-align: left; vertical-align: top; }
th { border-bottom: 2px solid #d0d7de; white-space: nowrap; }
td { border-bottom: 1px solid #eaeef2; font-variant-numeric: tabular-nums; }
td.files { min-width: 260px; max-width: 420px; overflow-wrap: anywhere; }
td.error { min-width: 180px; max-width: 320px; overflow-wrap: anywhere; }
.busy { color: #0969da; font-weight: 600; } .idle { color: #656d76; }
pre { font-size: 12px; max-width: 560px; overflow: auto; background: #f6f8fa; padding: 6px; }
.links a { margin-right: 4px; } .links code { font-size: 12px; margin-right: 14px; }
</style></head><body>
<h1>daskscore jobs on this scheduler</h1>
<p class="note"><span id="note">loading&hellip;</span> &middot;
<a id="dask" href="status">Dask dashboard</a> &middot; <a id="json" href="">status.json</a></p>
<noscript><p>This page needs JavaScript; the counts are in status.json.</p></noscript>
<div id="jobs"></div>
<p id="empty" class="note" hidden>No daskscore job has run on this scheduler yet.</p>
<script>
"use strict";
const base = location.pathname.replace(/\\/+$/, "");
const url = base + "/status.json";
document.getElementById("json").href = url;
document.getElementById("dask").href = base.replace(/daskscore$/, "status");
const SVG = "http://www.w3.org/2000/svg";
const num = (n) => Number(n || 0).toLocaleString("en-US");
const two = (n) => String(Math.floor(n)).padStart(2, "0");
function secs(s) {
  s = Math.max(0, Math.floor(s || 0));
  if (s >= 3600) return Math.floor(s / 3600) + "h" + two(s % 3600 / 60) + "m";
  if (s >= 60) return Math.floor(s / 60) + "m" + two(s % 60) + "s";
  return s + "s";
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "field") e.dataset.field = v; else e.setAttribute(k, v);
  }
  for (const kid of kids) e.append(kid);
  return e;
}
function table(field, heads, rows) {
  const head = el("tr", {}, ...heads.map((h) => el("th", {}, h)));
  return el("table", {field: field}, el("thead", {}, head), el("tbody", {}, ...rows));
}
function fileLink(label, path) {
  const href = "file://" + encodeURI(String(path).replace(/\\\\/g, "/")).replace(/#/g, "%23");
  return el("span", {field: label.toLowerCase()}, el("a", {href: href}, label),
            el("code", {}, path));
}
function spark(history) {  // items/s between successive points, as a polyline
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 240 36");
  svg.dataset.field = "sparkline";
  const rates = [];
  for (let i = 1; i < history.length; i++) {
    const dt = history[i][0] - history[i - 1][0];
    if (dt > 0) rates.push([history[i][0], (history[i][1] - history[i - 1][1]) / dt]);
  }
  if (rates.length) {
    const t0 = rates[0][0], span = Math.max(1e-9, rates[rates.length - 1][0] - t0);
    const top = Math.max(...rates.map((r) => r[1]), 1e-9);
    const pts = rates.map((r) => [rates.length === 1 ? 240 : 2 + 236 * (r[0] - t0) / span,
                                  34 - 32 * r[1] / top]);
    if (pts.length === 1) pts.unshift([2, pts[0][1]]);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "));
    svg.appendChild(line);
  }
  const title = document.createElementNS(SVG, "title");
  title.textContent = "items/s over time";
  svg.appendChild(title);
  return svg;
}
function job(j, open) {
  const running = j.status === "Running";
  const tone = running ? "run" : (j.tone || (j.status === "Completed" ? "ok" : "bad"));
  const name = j.name || j.deployment || j.job_id;
  const sec = el("section", {class: "job tone-" + tone});
  sec.dataset.jobId = j.job_id;
  sec.append(el("h2", {}, el("span", {field: "name"}, name),
                el("span", {class: "verdict", field: "verdict"}, j.verdict || j.status)));
  sec.append(el("div", {class: "where", field: "where"},
                "input " + (j.input || "?") + " \\u2192 output " + (j.output || "?")));
  sec.append(el("div", {class: "id"}, "job " + j.job_id +
                (j.deployment && j.deployment !== name ? " \\u00b7 " + j.deployment : "")));
  const total = Number(j.items_total || 0), done = Number(j.items_done || 0);
  const pct = total ? Math.min(100, Math.floor(100 * done / total)) : (running ? 0 : 100);
  const fill = el("div", {class: "fill"});
  fill.style.width = pct + "%";
  const bar = el("div", {class: "bar", role: "progressbar", field: "bar", "aria-valuemin": "0",
                         "aria-valuemax": "100", "aria-valuenow": String(pct)}, fill);
  const rate = Number(j.items_per_s || 0);
  const parts = [pct + "%", num(j.mini_batches_done) + "/" + num(j.mini_batches_total) +
                 " mini-batches", num(done) + "/" + num(total) + " items",
                 (rate < 10 ? rate.toFixed(1) : num(Math.round(rate))) + " items/s",
                 "elapsed " + secs(j.elapsed_s)];
  if (running) parts.push(j.eta_s == null ? "ETA \\u2014" : "ETA " + secs(j.eta_s));
  const counts = el("span", {class: "counts", field: "counts"}, parts.join(" \\u00b7 "));
  if (j.failed_items > 0) {  // (partial: run() returned fewer results than items)
    const failed = Number(j.failed_mini_batches || 0);
    const partial = Number(j.partial_mini_batches || 0), mbs = failed + partial;
    const kinds = partial ? " (" + (failed ? num(failed) + " failed, " : "") + num(partial) +
      " partial)" : "";
    counts.append(" \\u00b7 ", el("span", {class: "bad", field: "failed-items"},
      num(j.failed_items) + " failed item" + (j.failed_items === 1 ? "" : "s") + " in " +
      num(mbs) + " mini-batch" + (mbs === 1 ? "" : "es") + kinds));
  }
  sec.append(el("div", {class: "row"}, bar, counts, spark(j.history || [])));
  if (running && (j.workers || []).length) {
    sec.append(el("h3", {}, "Workers"), table("workers",
      ["worker", "state", "mini-batches", "running for"],
      j.workers.map((w) => el("tr", {}, el("td", {}, w.worker),
        el("td", {class: w.busy ? "busy" : "idle"}, w.busy ? "busy" : "idle"),
        el("td", {}, w.busy ? w.mini_batches[0] + "\\u2013" + w.mini_batches[1] : ""),
        el("td", {}, w.busy && w.running_s != null ? secs(w.running_s) : "")))));
  }
  if (running && (j.running || []).length) {  // slow run() calls: what the job waits on
    sec.append(el("div", {class: "where", field: "slow"}, "slow run() calls: " +
      j.running.map((r) => "mini-batch " + r[0] + " (" + secs(r[1]) + ")").join(", ")));
  }
  const failures = j.failures || [];
  if (failures.length) {
    sec.append(el("h3", {}, "Failures"), table("failures",
      ["mini-batch", "files", "status", "tries", "error", "traceback"],
      failures.map((f) => {
        const key = j.job_id + ":" + f[0];
        const det = el("details", {}, el("summary", {}, "traceback"), el("pre", {}, f[5]));
        det.dataset.key = key;
        if (open.has(key)) det.open = true;
        return el("tr", {}, el("td", {}, String(f[0])), el("td", {class: "files"}, f[1]),
                  el("td", {}, f[2]), el("td", {}, String(f[3])),
                  el("td", {class: "error"}, f[4]), el("td", {}, det));
      })));
  }
  if (j.logs || j.report) {
    const links = el("div", {class: "row links"});
    if (j.report) links.append(fileLink("Report", j.report));
    if (j.logs) links.append(fileLink("Logs", j.logs));
    sec.append(links);
  }
  return sec;
}
async function refresh() {
  const note = document.getElementById("note");
  try {
    const response = await fetch(url, {cache: "no-store"});
    const data = await response.json();
    const box = document.getElementById("jobs");
    const open = new Set([...box.querySelectorAll("details[open]")].map((d) => d.dataset.key));
    box.replaceChildren(...data.jobs.map((j) => job(j, open)));
    document.getElementById("empty").hidden = data.jobs.length > 0;
    note.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    note.textContent = "the scheduler does not answer (" + err + ")";
  }
}
refresh();
setInterval(refresh, 2000);
</script></body></html>
"""
