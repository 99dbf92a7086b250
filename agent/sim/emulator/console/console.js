// The rehearsal console: polls the emulator's JSON endpoints and redraws; it only reads.
"use strict";

const POLL_MS = 1000;
const PAGE_SIZE = 50;
const FINISHED = new Set(["Success", "Fail", "PartialSuccess", "Stopped"]);
const TERMINAL = ["success", "fail", "stopped", "removed"];
const view = { taskId: null, deviceId: null, offset: 0, state: "", device: "", error: "" };
let timer = null;
// Each refresh has a number; only the latest may draw or schedule the next poll, so an answer
// that arrives after a filter changed can neither overwrite the table nor start a second poll.
let generation = 0;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function time(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

// Wire times to the millisecond: several messages share a second.
function preciseTime(seconds) {
  const ms = String(Math.floor((seconds * 1000) % 1000)).padStart(3, "0");
  return `${time(seconds)}.${ms}`;
}

function deviceLink(deviceId) {
  return el("a", { href: `#/device/${encodeURIComponent(deviceId)}` }, deviceId);
}

function taskLink(taskId, label) {
  return el("a", { href: `#/task/${encodeURIComponent(taskId)}` }, label);
}

function terminal(progress) {
  return TERMINAL.reduce((sum, key) => sum + (progress[key] || 0), 0);
}

function bar(progress) {
  const total = progress.total || 0;
  const node = el("div", { class: "bar", role: "img" });
  for (const key of ["success", "fail", "stopped", "removed", "processing"]) {
    const count = progress[key] || 0;
    if (count && total) {
      const part = el("span", { class: key, title: `${key}: ${count}` });
      part.style.width = `${(100 * count) / total}%`;
      node.append(part);
    }
  }
  node.setAttribute("aria-label", `${terminal(progress)} of ${total} ended`);
  return node;
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// The latency histogram as inline SVG: one bar per bin, the axis in seconds under it.
function histogram(latency) {
  if (!latency.ended) return el("p", { class: "muted" }, "No subtask has ended yet.");
  const width = 640;
  const height = 140;
  const bottom = 20;
  const peak = Math.max(...latency.counts);
  const step = width / latency.counts.length;
  const chart = svg("svg", {
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "data-ended": latency.ended,
  });
  latency.counts.forEach((count, index) => {
    const tall = peak ? ((height - bottom - 14) * count) / peak : 0;
    const bar = svg("rect", {
      class: "histogram-bar",
      x: index * step + 1,
      y: height - bottom - tall,
      width: step - 2,
      height: tall,
    });
    const from = (index * latency.bin_s).toFixed(2);
    const to = ((index + 1) * latency.bin_s).toFixed(2);
    bar.append(svg("title", {}, `${from}-${to} s: ${count}`));
    chart.append(bar);
    if (count) {
      chart.append(
        svg("text", { x: index * step + step / 2, y: height - bottom - tall - 3, class: "count" }, count)
      );
    }
  });
  for (const index of [0, latency.counts.length / 2, latency.counts.length]) {
    const x = Math.min(Math.max(index * step, 12), width - 24);
    chart.append(
      svg("text", { x, y: height - 5, class: "axis" }, `${(index * latency.bin_s).toFixed(1)} s`)
    );
  }
  return chart;
}

// Progress over time as inline SVG: one line per count, the legend right of the plot.
const LINES = [
  ["ended", "ended"],
  ["success", "succeeded"],
  ["fail", "failed"],
  ["processing", "in flight"],
];

function lineChart(series) {
  const points = series.points;
  if (points.length === 0) return el("p", { class: "muted" }, "No sample yet.");
  const [width, height, left, right, top, bottom] = [640, 170, 44, 110, 8, 22];
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const start = points[0].at;
  const span = Math.max(points[points.length - 1].at - start, 1);
  const peak = Math.max(series.total, 1);
  const x = (at) => left + (plotW * (at - start)) / span;
  const y = (count) => top + plotH - (plotH * count) / peak;
  const chart = svg("svg", {
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "data-points": points.length,
  });
  chart.append(
    svg("rect", { x: left, y: top, width: plotW, height: plotH, class: "plot" }),
    svg("text", { x: left - 4, y: top + 4, class: "y-axis" }, series.total),
    svg("text", { x: left - 4, y: top + plotH, class: "y-axis" }, 0),
    svg("text", { x: left, y: height - 6, class: "axis" }, "0 s"),
    svg("text", { x: left + plotW, y: height - 6, class: "axis" }, `${span.toFixed(0)} s`)
  );
  LINES.forEach(([key, label], index) => {
    const line = svg("polyline", {
      class: `line line-${key}`,
      "data-key": key,
      points: points.map((p) => `${x(p.at).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" "),
    });
    const last = points[points.length - 1][key];
    line.append(svg("title", {}, `${label}: ${last}`));
    const ly = top + 12 + index * 18;
    chart.append(
      line,
      svg("line", { x1: width - right + 10, x2: width - right + 28, y1: ly - 4, y2: ly - 4,
        class: `line line-${key}` }),
      svg("text", { x: width - right + 32, y: ly, class: "legend" }, `${label} ${last}`)
    );
  });
  return chart;
}

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function progressCell(progress) {
  const box = el("div", { class: "progress-cell" }, bar(progress));
  box.append(
    el("span", {}, `${terminal(progress)}/${progress.total} ended, ${progress.fail || 0} failed`)
  );
  return el("td", {}, box);
}

function taskRow(task) {
  const progress = task.task_progress;
  const row = el(
    "tr",
    {
      "data-task-id": task.task_id,
      "data-status": task.status,
      "data-terminal": String(terminal(progress)),
      "data-total": String(progress.total),
    },
    el("td", {}, el("a", { href: `#/task/${encodeURIComponent(task.task_id)}` }, task.name)),
    el("td", {}, task.api),
    el("td", {}, task.task_type),
    el("td", { class: `status status-${task.status}` }, task.status)
  );
  row.append(progressCell(progress), el("td", {}, time(task.created_at)));
  row.append(el("td", {}, time(task.finished_at)), el("td", {}, stopButton(task)));
  return row;
}

// The console's one write: the API's own stop (IoTDA) or cancel (Tencent) of a task, offered
// only where the API has it; the emulator runs the API's checks and may still refuse.
function stopButton(task) {
  if (!task.stop) return "";
  const button = el(
    "button",
    { type: "button", class: "stop", "data-operation": task.stop.operation,
      title: `${task.stop.operation} through the emulated ${task.api} API` },
    task.stop.label
  );
  button.addEventListener("click", async () => {
    if (!window.confirm(`${task.stop.label} task ${task.name} (${task.task_id})?`)) return;
    button.disabled = true;
    const response = await fetch(`/sim/v1/tasks/${encodeURIComponent(task.task_id)}/stop`, {
      method: "POST",
      headers: { "X-Console-Action": "stop" },
    });
    const body = await response.json().catch(() => ({}));
    $("action-error").textContent = response.ok
      ? ""
      : `${task.stop.operation} refused: ${body.error || response.status}`;
    $("action-error").hidden = response.ok;
    refresh();
  });
  return button;
}

async function drawList(stale) {
  const [{ tasks }, downloads] = await Promise.all([
    getJson("/sim/v1/tasks"),
    getJson("/sim/v1/downloads/overview"),
  ]);
  if (stale()) return false;
  tasks.sort((a, b) => b.created_at - a.created_at);
  $("tasks").tBodies[0].replaceChildren(...tasks.map(taskRow));
  $("no-tasks").hidden = tasks.length > 0;
  drawDownloads(downloads);
  return tasks.every((t) => FINISHED.has(t.status));
}

// Package downloads per package and per connection (a gateway fetches once for its children).
function drawDownloads(data) {
  $("packages").tBodies[0].replaceChildren(
    ...data.packages.map((p) =>
      el(
        "tr",
        { "data-package": p.package_id, "data-requests": String(p.requests) },
        el("td", {}, p.name ? `${p.name} (${p.package_id})` : p.package_id),
        el("td", {}, p.version),
        el("td", {}, p.size === null ? "" : String(p.size)),
        el("td", {}, String(p.connections)),
        el("td", {}, String(p.completed)),
        el("td", {}, String(p.devices)),
        el("td", {}, String(p.requests)),
        el("td", {}, String(p.bytes))
      )
    )
  );
  $("download-connections").tBodies[0].replaceChildren(
    ...data.connections.map((c) =>
      el(
        "tr",
        { "data-package": c.package_id, "data-connection": c.connection },
        el("td", {}, c.package_id),
        el("td", {}, deviceLink(c.connection)),
        el("td", {}, String(c.devices)),
        el("td", {}, String(c.requests)),
        el("td", {}, String(c.bytes)),
        el("td", {}, c.completed ? "yes" : "no")
      )
    )
  );
  const any = data.packages.length > 0;
  $("no-downloads").hidden = any;
  $("packages").hidden = !any;
  $("download-connections").hidden = !any;
  $("per-connection").hidden = !any;
  const statuses = Object.entries(data.statuses).map(([code, n]) => `${code}: ${n}`).join(", ");
  const shown = data.connections.length < data.connection_rows
    ? `The first ${data.connections.length} of ${data.connection_rows} connections. `
    : "";
  $("download-note").textContent = any ? `${shown}HTTP statuses: ${statuses}.` : "";
}

function fact(name, value) {
  return [el("dt", {}, name), el("dd", {}, value)];
}

async function drawTask(stale) {
  const id = view.taskId;
  const query = new URLSearchParams({ offset: view.offset, limit: PAGE_SIZE });
  if (view.state) query.set("state", view.state);
  if (view.device) query.set("device", view.device);
  if (view.error) query.set("error", view.error);
  const path = `/sim/v1/tasks/${encodeURIComponent(id)}`;
  // The three answers are fetched at once: a refresh waits for the slowest, not for their sum.
  const [{ tasks }, page, series] = await Promise.all([
    getJson("/sim/v1/tasks"),
    getJson(`${path}/subtask-page?${query}`),
    getJson(`${path}/progress-series`),
  ]);
  if (stale()) return false;
  const task = tasks.find((t) => t.task_id === id);
  if (!task) throw new Error(`no task ${id}`);
  const progress = task.task_progress;
  $("task-title").textContent = `${task.name} (${task.task_id})`;
  $("task-facts").replaceChildren(
    ...fact("API", task.api),
    ...fact("Type", task.task_type),
    ...fact("Status", task.status),
    ...fact("Created", time(task.created_at)),
    ...fact("Finished", time(task.finished_at)),
    ...fact(
      "Subtasks",
      TERMINAL.concat(["processing", "waitting", "fail_wait_retry"])
        .map((k) => `${k} ${progress[k] || 0}`)
        .join(", ")
    )
  );
  $("task-view").dataset.status = task.status;
  $("task-actions").replaceChildren(stopButton(task));
  $("task-bar").replaceChildren(bar(progress));
  const rows = page.subtasks.map((s) =>
    el(
      "tr",
      { "data-device": s.device_id, "data-state": s.state },
      el("td", {}, deviceLink(s.device_id)),
      el("td", { class: `state-${s.state}` }, s.state),
      el("td", {}, String(s.attempts)),
      el("td", {}, time(s.dispatched_at)),
      el("td", {}, time(s.finished_at)),
      el("td", { class: "error-cell" }, [s.error_code, s.error_msg].filter(Boolean).join(": "))
    )
  );
  $("subtasks").tBodies[0].replaceChildren(...rows);
  $("reasons").tBodies[0].replaceChildren(
    ...page.reasons.map((reason) =>
      el(
        "tr",
        { "data-count": String(reason.count) },
        el("td", {}, reason.error_code ?? ""),
        el("td", { class: "error-cell" }, reason.error_msg ?? ""),
        el("td", {}, String(reason.count))
      )
    )
  );
  $("no-reasons").hidden = page.reasons.length > 0;
  $("latency").replaceChildren(histogram(page.latency));
  $("progress-chart").replaceChildren(lineChart(series));
  $("subtasks").dataset.matched = String(page.matched);
  $("matched").textContent = `${page.matched} matching`;
  const last = Math.min(page.offset + page.subtasks.length, page.matched);
  $("page-info").textContent = page.matched ? `${page.offset + 1}-${last} of ${page.matched}` : "";
  $("prev").disabled = view.offset === 0;
  $("next").disabled = view.offset + PAGE_SIZE >= page.matched;
  return FINISHED.has(task.status);
}

function errorText(item) {
  return [item.error_code, item.error_msg].filter(Boolean).join(": ");
}

function payloadCell(message) {
  const text = message.truncated
    ? `${message.payload}\u2026 (${message.size} bytes, cut)`
    : message.payload;
  return el("td", { class: "payload" }, el("pre", {}, text));
}

async function drawDevice(stale) {
  const id = view.deviceId;
  const data = await getJson(`/sim/v1/devices/${encodeURIComponent(id)}/activity`);
  if (stale()) return false;
  const device = data.device;
  $("device-title").textContent = device.device_id;
  $("device-view").dataset.status = device.status;
  $("device-facts").replaceChildren(
    ...fact("Platform", device.platform),
    ...fact("Product", device.product_id),
    ...fact("Name", device.name),
    ...fact("Status", device.status),
    ...fact("Gateway", device.gateway_id ? deviceLink(device.gateway_id) : "none (connects itself)")
  );
  $("device-subtasks").tBodies[0].replaceChildren(
    ...data.subtasks.map((s) =>
      el(
        "tr",
        { "data-task-id": s.task_id, "data-state": s.state },
        el("td", {}, taskLink(s.task_id, s.task_name)),
        el("td", {}, s.api),
        el("td", {}, s.task_type),
        el("td", { class: `state-${s.state}` }, s.state),
        el("td", {}, String(s.attempts)),
        el("td", {}, time(s.dispatched_at)),
        el("td", {}, time(s.finished_at)),
        el("td", { class: "error-cell" }, errorText(s))
      )
    )
  );
  $("connections").tBodies[0].replaceChildren(
    ...data.connections.map((c) =>
      el("tr", { "data-status": c.status }, el("td", {}, preciseTime(c.at)),
        el("td", { class: `presence-${c.status}` }, c.status))
    )
  );
  const presenceNote = {
    off: "Presence is not modelled (lenient): every device counts as online.",
    uplink: "Presence from uplinks: a device counts as online from its first message.",
  };
  $("no-connections").textContent = data.connections.length
    ? ""
    : presenceNote[device.presence] || "No connection change seen.";
  const limits = data.wire_limits;
  const via = device.gateway_id
    ? ` (with those of its gateway ${device.gateway_id} that name it)`
    : "";
  $("wire-note").textContent =
    `The last ${limits.max_entries} messages each way${via}, at most ${limits.max_bytes} bytes ` +
    `each way, payloads cut at ${limits.max_payload} bytes; newest first.`;
  $("downlinks").tBodies[0].replaceChildren(
    ...data.downlinks.reverse().map((m) =>
      el(
        "tr",
        {
          "data-task-id": m.task_id || "",
          "data-subtask-state": m.subtask_state || "",
          class: m.subtask_state === "fail" ? "failed" : "",
        },
        el("td", {}, preciseTime(m.at)),
        el("td", { class: "topic" }, m.via ? `${m.topic} (via ${m.via})` : m.topic),
        el("td", {}, m.task_id ? taskLink(m.task_id, m.task_id.slice(0, 8)) : ""),
        el("td", { class: `state-${m.subtask_state}` }, m.subtask_state || ""),
        payloadCell(m)
      )
    )
  );
  $("uplinks").tBodies[0].replaceChildren(
    ...data.uplinks.reverse().map((m) =>
      el("tr", {}, el("td", {}, preciseTime(m.at)),
        el("td", { class: "topic" }, m.via ? `${m.topic} (via ${m.via})` : m.topic),
        payloadCell(m))
    )
  );
  $("device-downloads").tBodies[0].replaceChildren(...data.downloads.map(downloadRow));
  $("no-device-downloads").hidden = data.downloads.length > 0;
  return false;
}

function downloadRow(d) {
  return el(
    "tr",
    {},
    el("td", {}, d.package_id),
    el("td", {}, deviceLink(d.connection)),
    el("td", {}, d.device_id ? deviceLink(d.device_id) : ""),
    el("td", {}, String(d.requests)),
    el("td", {}, String(d.bytes))
  );
}

async function refresh() {
  clearTimeout(timer);
  const mine = ++generation;
  const stale = () => mine !== generation;
  try {
    let done;
    if (view.deviceId !== null) done = await drawDevice(stale);
    else if (view.taskId !== null) done = await drawTask(stale);
    else done = await drawList(stale);
    if (stale()) return;
    $("error").hidden = true;
    $("updated").textContent = `updated ${time(Date.now() / 1000)}${done ? "" : " (live)"}`;
  } catch (error) {
    if (stale()) return;
    $("error").textContent = `Cannot reach the emulator: ${error.message}`;
    $("error").hidden = false;
  }
  // Keep polling even when all is finished: a new task may be created at any time.
  timer = setTimeout(refresh, POLL_MS);
}

function route() {
  const task = location.hash.match(/^#\/task\/(.+)$/);
  const device = location.hash.match(/^#\/device\/(.+)$/);
  const taskId = task ? decodeURIComponent(task[1]) : null;
  view.deviceId = device ? decodeURIComponent(device[1]) : null;
  if (taskId !== view.taskId) {
    Object.assign(view, { taskId, offset: 0, state: "", device: "", error: "" });
    $("filter-state").value = "";
    $("filter-device").value = "";
    $("filter-error").value = "";
  }
  $("list-view").hidden = taskId !== null || view.deviceId !== null;
  $("task-view").hidden = taskId === null;
  $("device-view").hidden = view.deviceId === null;
  window.scrollTo(0, 0);
  refresh();
}

$("filter-state").addEventListener("change", (event) => {
  Object.assign(view, { state: event.target.value, offset: 0 });
  refresh();
});
$("filter-device").addEventListener("input", (event) => {
  Object.assign(view, { device: event.target.value.trim(), offset: 0 });
  refresh();
});
$("filter-error").addEventListener("input", (event) => {
  Object.assign(view, { error: event.target.value.trim(), offset: 0 });
  refresh();
});
$("filters").addEventListener("submit", (event) => event.preventDefault());
$("prev").addEventListener("click", () => {
  view.offset = Math.max(0, view.offset - PAGE_SIZE);
  refresh();
});
$("next").addEventListener("click", () => {
  view.offset += PAGE_SIZE;
  refresh();
});
window.addEventListener("hashchange", route);
route();
