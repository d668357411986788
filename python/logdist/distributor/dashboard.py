"""The live dashboard at `/`: one static page that polls /api/v1/metrics once a second."""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>logdist distributor</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
 h1{font-size:20px;margin:0 0 4px} .sub{color:#666;margin-bottom:16px}
 table{border-collapse:collapse;width:100%;background:#fff}
 th,td{padding:6px 10px;border-bottom:1px solid #eee;text-align:right}
 th:first-child,td:first-child{text-align:left} .bar{position:relative;height:14px;background:#eee;min-width:160px}
 .bar .w{position:absolute;top:0;bottom:0;border-right:2px solid #333}
 .bar .s{position:absolute;top:0;bottom:0;left:0;background:#4a90d9}
 .up{color:#1a7f37}.down,.removed{color:#c62828}.ejected{color:#e65100}.disabled{color:#999}
 .tot{display:flex;gap:24px;margin:12px 0;flex-wrap:wrap}
 .tot div{background:#fff;padding:8px 12px;border:1px solid #eee}
 .tot b{display:block;font-size:18px}
</style></head><body>
<h1>logdist distributor</h1><div class="sub" id="sub">connecting...</div>
<div class="tot" id="tot"></div>
<table><thead><tr><th>analyzer</th><th>state</th><th>weight</th><th>share (bar) vs expected (line)</th>
<th>acked</th><th>msgs/s</th><th>queued</th><th>in flight</th><th>failed</th><th>retried</th><th>rerouted</th>
<th>dead</th><th>p50 ms</th><th>p99 ms</th></tr></thead><tbody id="rows"></tbody></table>
<script>
let prev = null, prevT = 0;
const fmt = n => n == null ? "-" : (typeof n === "number" ? n.toLocaleString() : n);
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
async function tick() {
  try {
    const r = await fetch("api/v1/metrics", {cache: "no-store"});
    const m = await r.json(); const now = performance.now();
    const t = m.totals;
    document.getElementById("sub").textContent =
      `durability ${m.durability} · backend ${m.backend} · strategy ${m.strategy} · up ${Math.round(m.uptime_s)} s`;
    document.getElementById("tot").innerHTML = [["accepted", t.accepted], ["acked", t.acked], ["held", t.held],
      ["pending", t.pending], ["rejected", t.rejected], ["duplicate packets", t.duplicate_packets],
      ["dead letters", t.dead_letters]].map(([k, v]) => `<div>${k}<b>${fmt(v)}</b></div>`).join("");
    const before = {}; if (prev) for (const a of prev.analyzers) before[a.id] = a.acked;
    const dt = prev ? (now - prevT) / 1000 : 0;
    document.getElementById("rows").innerHTML = m.analyzers.map(a => {
      const rate = dt > 0 && a.id in before ? Math.round((a.acked - before[a.id]) / dt) : null;
      return `<tr><td>${esc(a.id)}</td><td class="${a.state}">${a.state}</td><td>${a.weight}</td>
        <td><div class="bar"><div class="s" style="width:${(a.share*100).toFixed(2)}%"></div>
        <div class="w" style="width:${(a.expected_share*100).toFixed(2)}%"></div></div>
        ${(a.share*100).toFixed(2)}% / ${(a.expected_share*100).toFixed(2)}%</td>
        <td>${fmt(a.acked)}</td><td>${fmt(rate)}</td><td>${fmt(a.queued)}</td><td>${fmt(a.inflight)}</td>
        <td>${fmt(a.failed)}</td><td>${fmt(a.retried)}</td><td>${fmt(a.rerouted)}</td><td>${fmt(a.dead_lettered)}</td>
        <td>${fmt(a.latency_ms.p50)}</td><td>${fmt(a.latency_ms.p99)}</td></tr>`;
    }).join("");
    prev = m; prevT = now;
  } catch (e) { document.getElementById("sub").textContent = "cannot reach the distributor: " + e; }
}
tick(); setInterval(tick, 1000);
</script></body></html>
"""
