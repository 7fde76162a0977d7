"""/dashboard: a live page over /varz and /connz, with no external assets.

Theory of operation
-------------------
The page is static; its script polls ``varz`` and ``connz`` (relative URLs, so the page
works under ``http_base_path``) once a second, keeps the last two minutes of samples and
draws connections and message rates on a ``<canvas>``. Rates are differences between two
polls of the cumulative counters divided by the time between them, so they are right
whatever the poll rhythm. The per-worker table comes from the ``worker_stats`` natsx adds
to /varz, and the connection table from ``/connz?sort=msgs_from&limit=10&worker=1``.

Everything the script writes carries an id (``connections``, ``workers``...), and the
canvas reports how many samples it drew in ``data-points``, so a headless browser's DOM
shows what the page computed.
"""
from __future__ import annotations

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>natsx dashboard</title>
<style>
  body { font-family: ui-sans-serif, system-ui, sans-serif; margin: 24px 32px; color: #223; }
  h1 { font-size: 22px; margin: 0 0 4px 0; }
  h2 { font-size: 16px; margin: 24px 0 8px 0; }
  #status { font-size: 13px; color: #667; }
  #status[data-state="error"] { color: #b00; }
  .tiles { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
  .tile { border: 1px solid #dde; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
  .tile .label { font-size: 12px; color: #667; }
  .tile .value { font-size: 22px; font-variant-numeric: tabular-nums; }
  canvas { border: 1px solid #dde; border-radius: 6px; }
  .legend span { display: inline-block; margin-right: 16px; font-size: 12px; }
  .legend i { display: inline-block; width: 12px; height: 3px; margin-right: 4px;
              vertical-align: middle; }
  table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
  th, td { border-bottom: 1px solid #eef; padding: 4px 10px; text-align: right; }
  th { color: #667; font-weight: 600; }
  td.text, th.text { text-align: left; }
  tr.down td { color: #b00; }
</style>
</head>
<body>
<h1>natsx <span id="server-name"></span></h1>
<div id="status" data-state="loading">loading&hellip;</div>
<div class="tiles">
  <div class="tile"><div class="label">Connections</div><div class="value" id="connections">-</div></div>
  <div class="tile"><div class="label">Total connections</div><div class="value" id="total-connections">-</div></div>
  <div class="tile"><div class="label">Subscriptions</div><div class="value" id="subscriptions">-</div></div>
  <div class="tile"><div class="label">Msgs in /s</div><div class="value" id="in-msgs-rate">-</div></div>
  <div class="tile"><div class="label">Msgs out /s</div><div class="value" id="out-msgs-rate">-</div></div>
  <div class="tile"><div class="label">Bytes in /s</div><div class="value" id="in-bytes-rate">-</div></div>
  <div class="tile"><div class="label">Bytes out /s</div><div class="value" id="out-bytes-rate">-</div></div>
  <div class="tile"><div class="label">Slow consumers</div><div class="value" id="slow-consumers">-</div></div>
  <div class="tile"><div class="label">Uptime</div><div class="value" id="uptime">-</div></div>
</div>
<canvas id="chart" width="960" height="260" data-points="0"></canvas>
<div class="legend">
  <span><i style="background:#2a6fdb"></i>connections</span>
  <span><i style="background:#1f9d55"></i>msgs in /s</span>
  <span><i style="background:#d9822b"></i>msgs out /s</span>
</div>
<h2>Workers</h2>
<table id="workers">
  <thead><tr><th>Worker</th><th>PID</th><th>Connections</th><th>Subscriptions</th>
  <th>Msgs in</th><th>Msgs out</th><th>Bytes in</th><th>Bytes out</th>
  <th>Slow consumers</th><th>CPU %</th><th>Memory</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Busiest connections</h2>
<table id="conns">
  <thead><tr><th>CID</th><th class="text">Name</th><th class="text">Address</th>
  <th>Worker</th><th>Subs</th><th>Msgs in</th><th>Msgs out</th><th class="text">Idle</th></tr></thead>
  <tbody></tbody>
</table>
<script>
(function () {
  "use strict";
  var HISTORY = 120;
  var samples = [];
  var previous = null;
  var polls = 0;

  function byId(id) { return document.getElementById(id); }
  function setText(id, value) { byId(id).textContent = value; }

  function human(n) {
    var units = ["", "K", "M", "G", "T"];
    var i = 0;
    while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i === 0 ? String(Math.round(n * 10) / 10) : n.toFixed(1)) + units[i];
  }

  function cell(row, value, cls) {
    var td = document.createElement("td");
    td.textContent = value;
    if (cls) { td.className = cls; }
    row.appendChild(td);
  }

  function fillTable(id, rows, render) {
    var body = byId(id).tBodies[0];
    while (body.firstChild) { body.removeChild(body.firstChild); }
    rows.forEach(function (item) {
      var row = document.createElement("tr");
      render(row, item);
      body.appendChild(row);
    });
  }

  function rate(now, key, varz) {
    if (!previous) { return 0; }
    var seconds = (now - previous.at) / 1000;
    return seconds > 0 ? Math.max(0, (varz[key] - previous.varz[key]) / seconds) : 0;
  }

  function update(varz, connz) {
    var now = Date.now();
    var inRate = rate(now, "in_msgs", varz);
    var outRate = rate(now, "out_msgs", varz);
    setText("server-name", varz.server_name + " (" + varz.version + ")");
    setText("connections", String(varz.connections));
    setText("total-connections", String(varz.total_connections));
    setText("subscriptions", String(varz.subscriptions));
    setText("in-msgs-rate", human(inRate));
    setText("out-msgs-rate", human(outRate));
    setText("in-bytes-rate", human(rate(now, "in_bytes", varz)));
    setText("out-bytes-rate", human(rate(now, "out_bytes", varz)));
    setText("slow-consumers", String(varz.slow_consumers));
    setText("uptime", varz.uptime);
    previous = {at: now, varz: varz};
    samples.push({conns: varz.connections, inRate: inRate, outRate: outRate});
    if (samples.length > HISTORY) { samples.shift(); }
    fillTable("workers", varz.worker_stats || [], function (row, w) {
      if (!w.answered) { row.className = "down"; }
      cell(row, String(w.worker));
      cell(row, w.answered ? String(w.pid) : "down");
      cell(row, String(w.connections));
      cell(row, String(w.subscriptions));
      cell(row, human(w.in_msgs));
      cell(row, human(w.out_msgs));
      cell(row, human(w.in_bytes));
      cell(row, human(w.out_bytes));
      cell(row, String(w.slow_consumers));
      cell(row, String(w.cpu));
      cell(row, human(w.mem) + "B");
    });
    fillTable("conns", connz.connections || [], function (row, c) {
      cell(row, String(c.cid));
      cell(row, c.name || "", "text");
      cell(row, c.ip + ":" + c.port, "text");
      cell(row, c.worker === undefined ? "" : String(c.worker));
      cell(row, String(c.subscriptions));
      cell(row, human(c.in_msgs));
      cell(row, human(c.out_msgs));
      cell(row, c.idle, "text");
    });
    draw();
  }

  function draw() {
    var canvas = byId("chart");
    var ctx = canvas.getContext("2d");
    var w = canvas.width, h = canvas.height, pad = 30;
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = "#eef";
    ctx.lineWidth = 1;
    for (var g = 0; g <= 4; g++) {
      var gy = pad + (h - 2 * pad) * g / 4;
      ctx.beginPath(); ctx.moveTo(pad, gy); ctx.lineTo(w - pad, gy); ctx.stroke();
    }
    var maxConns = 1, maxRate = 1;
    samples.forEach(function (s) {
      maxConns = Math.max(maxConns, s.conns);
      maxRate = Math.max(maxRate, s.inRate, s.outRate);
    });
    function line(color, pick, top) {
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      samples.forEach(function (s, i) {
        var x = pad + (w - 2 * pad) * (HISTORY - samples.length + i) / (HISTORY - 1);
        var y = h - pad - (h - 2 * pad) * pick(s) / top;
        if (i === 0) { ctx.moveTo(x, y); } else { ctx.lineTo(x, y); }
      });
      ctx.stroke();
    }
    line("#2a6fdb", function (s) { return s.conns; }, maxConns);
    line("#1f9d55", function (s) { return s.inRate; }, maxRate);
    line("#d9822b", function (s) { return s.outRate; }, maxRate);
    ctx.fillStyle = "#667";
    ctx.font = "11px sans-serif";
    ctx.fillText("connections max " + maxConns, pad, 14);
    ctx.fillText("msgs/s max " + human(maxRate), w - pad - 140, 14);
    canvas.setAttribute("data-points", String(samples.length));
  }

  function getJSON(path) {
    return fetch(path, {cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
      return r.json();
    });
  }

  function poll() {
    Promise.all([getJSON("varz"), getJSON("connz?sort=msgs_from&limit=10&worker=1")])
      .then(function (answers) {
        update(answers[0], answers[1]);
        polls++;
        var status = byId("status");
        status.setAttribute("data-state", "ok");
        status.setAttribute("data-polls", String(polls));
        status.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function (err) {
        var status = byId("status");
        status.setAttribute("data-state", "error");
        status.textContent = String(err);
      })
      .then(function () { setTimeout(poll, 1000); });
  }

  draw();
  poll();
})();
</script>
</body>
</html>
"""
