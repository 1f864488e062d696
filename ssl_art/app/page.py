# ruff: noqa: E501  (one HTML/JS/CSS string: its lines are page source, not Python)
"""The single-page UI as one HTML string (no build step, no external assets): upload -> labels, Grad-CAM, neighbours.

The page asks ``/api/health`` what is loaded and shows only those panels (classifier only, index only, or both).
Dropping or choosing an image shows a preview at once, then posts it to ``/api/classify`` and ``/api/similar`` in
parallel with a progress indicator and elapsed time; results are built with DOM calls and ``textContent`` only, so
labels and file names are shown *escaped*, never interpreted as HTML and never stripped. Clicking a neighbour
queries with that work (``?row=N`` in the address, so a result can be shared and reloaded); a bad ``?row=`` shows a
readable message. The viewport meta tag and a fluid grid make it usable on a phone.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ssl_art: style, why, and similar works</title>
<style>
:root{--fg:#1d1d1f;--mute:#6e6e73;--bar:#3366cc;--bg:#f5f5f7;--err:#b00020}
*{box-sizing:border-box} body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);
margin:0 auto;padding:1rem;max-width:1200px}
h1{font-size:1.35rem;margin:.2rem 0 .8rem} h2{font-size:1.05rem;margin:.2rem 0 .6rem}
#drop{border:2px dashed #999;border-radius:10px;padding:1rem;display:flex;gap:1rem;align-items:center;
flex-wrap:wrap;background:var(--bg);cursor:pointer} #drop.over{border-color:var(--bar);background:#e8f0fe}
#preview{width:160px;height:160px;object-fit:contain;background:#ddd;border-radius:6px}
#status{min-height:1.5em;margin:.6rem 0;color:var(--mute)} #status.busy::before{content:"";display:inline-block;
width:.9em;height:.9em;margin-right:.5em;border:2px solid var(--bar);border-right-color:transparent;border-radius:50%;
animation:spin .8s linear infinite;vertical-align:-2px} @keyframes spin{to{transform:rotate(360deg)}}
#error{color:var(--err);font-weight:600;min-height:1.2em;white-space:pre-wrap}
.panels{display:grid;grid-template-columns:minmax(300px,1fr) 2fr;gap:1.2rem}
@media (max-width:760px){.panels{grid-template-columns:1fr}}
.head{margin-bottom:.8rem} .row{display:grid;grid-template-columns:minmax(6rem,52%) 1fr 3.2rem;gap:.4rem;
align-items:center;font-size:.9rem;margin:.15rem 0} .track{background:#e3e3e8;border-radius:4px;height:.8rem}
.fill{background:var(--bar);height:100%;border-radius:4px} .lab{overflow-wrap:anywhere}
#cam img{width:100%;max-width:320px;border-radius:6px;image-rendering:auto}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(130px,1fr));gap:.7rem}
.hit{background:var(--bg);border:0;border-radius:8px;padding:.4rem;text-align:left;cursor:pointer;font:inherit}
.hit:hover,.hit:focus{outline:2px solid var(--bar)} .hit img{width:100%;aspect-ratio:1;object-fit:contain;
background:#ddd;border-radius:4px} .hit .cap{font-size:.8rem;overflow-wrap:anywhere}
.hit img.broken{visibility:hidden} .muted{color:var(--mute);font-size:.85rem} [hidden]{display:none!important}
</style></head><body>
<h1>ssl_art &mdash; style, why, and the most similar works</h1>
<p id="info" class="muted">loading&hellip;</p>
<label id="drop" for="file"><img id="preview" alt="your image"><span><b>Drop a painting here</b> or click to choose
a file.<br><span class="muted">JPEG, PNG, WebP, TIFF; the image stays on this server.</span></span></label>
<input type="file" id="file" accept="image/*" hidden>
<div id="status" role="status" aria-live="polite"></div><div id="error" role="alert"></div>
<div class="panels">
 <section id="clfPanel" hidden><h2>Predicted style</h2><div id="labels"></div>
  <div id="cam"><h2 id="camTitle" hidden>Why (Grad-CAM)</h2><img id="camImg" alt="Grad-CAM heatmap" hidden></div></section>
 <section id="simPanel" hidden><h2>Most similar works</h2><div id="grid"></div></section>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let health = null, busy = 0, t0 = 0, timer = null;
function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e; }
function setBusy(on, what) {
  busy += on ? 1 : -1; const s = $("status");
  if (busy > 0) { if (on) { t0 = performance.now(); s.dataset.what = what; }
    s.className = "busy"; const tick = () => { s.textContent = s.dataset.what + " " +
      ((performance.now() - t0) / 1000).toFixed(1) + " s"; }; tick(); clearInterval(timer); timer = setInterval(tick, 100);
  } else { clearInterval(timer); s.className = ""; s.textContent = "done in " + ((performance.now() - t0) / 1000).toFixed(1) + " s"; }
}
function showError(msg) { $("error").textContent = msg || ""; }
async function api(url, opts) {
  let r; try { r = await fetch(url, opts); } catch (e) { throw new Error("the server cannot be reached (" + e.message + ")"); }
  let j = null; try { j = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new Error((j && j.error) || ("HTTP " + r.status));
  return j;
}
function renderLabels(res) {
  const box = $("labels"); box.replaceChildren();
  for (const h of res.heads) {
    const d = el("div", "head"); d.append(el("div", "muted", h.name));
    for (const t of h.top) {
      const row = el("div", "row"); row.dataset.testid = "label";
      const track = el("div", "track"), fill = el("div", "fill"); fill.style.width = (100 * t.prob).toFixed(1) + "%";
      track.append(fill); row.append(el("span", "lab", t.label), track, el("span", "", (100 * t.prob).toFixed(1) + "%"));
      d.append(row);
    }
    box.append(d);
  }
  const img = $("camImg");
  if (res.gradcam) { img.src = res.gradcam.image; img.alt = "Grad-CAM for " + res.gradcam.label;
    img.title = "regions that raise the score of: " + res.gradcam.label; img.hidden = false; $("camTitle").hidden = false;
    $("camTitle").textContent = "Why \\u201c" + res.gradcam.label + "\\u201d (Grad-CAM)"; }
  else { img.hidden = true; $("camTitle").hidden = true; }
}
function renderHits(res) {
  const grid = $("grid"); grid.replaceChildren();
  if (!res.hits.length) grid.append(el("p", "muted", "no similar works found"));
  for (const h of res.hits) {
    const b = el("button", "hit"); b.type = "button"; b.dataset.row = h.row; b.title = h.name;
    const im = el("img"); im.loading = "lazy"; im.alt = h.name; im.src = h.thumb;
    im.onerror = () => { im.classList.add("broken"); };
    b.append(im, el("div", "cap", h.score.toFixed(3) + " \\u00b7 " + (h.label ?? "")), el("div", "cap muted", h.name));
    b.onclick = () => { history.pushState(null, "", "?row=" + h.row); queryRow(h.row); };
    grid.append(b);
  }
}
async function runQueries(makeBody, rowParam, label) {
  showError(""); setBusy(true, "analysing " + label + "\\u2026");
  const jobs = [];
  if (health.classifier) jobs.push(api("/api/classify?topk=5" + rowParam, {method: "POST", body: makeBody()})
    .then(renderLabels));
  if (health.index) jobs.push(api("/api/similar?k=" + health.k + rowParam, {method: "POST", body: makeBody()}).then(renderHits));
  const out = await Promise.allSettled(jobs);
  const errs = out.filter((o) => o.status === "rejected").map((o) => o.reason.message);
  showError([...new Set(errs)].join("\\n")); setBusy(false);
}
function queryFile(f) {
  if (!f) return;
  if (f.type && !f.type.startsWith("image/")) { showError(f.name + " is not an image file"); return; }
  $("preview").src = URL.createObjectURL(f); $("preview").alt = f.name;
  runQueries(() => { const fd = new FormData(); fd.append("image", f, f.name); return fd; }, "", f.name);
}
async function queryRow(row) {
  if (!/^\\d+$/.test(String(row))) { showError("?row= must be a work number (0, 1, 2, ...), got \\u201c" + row + "\\u201d"); return; }
  if (!health.index) { showError("no collection is loaded on this server, so ?row= cannot be used"); return; }
  try { const w = await api("/api/works/" + row); $("preview").src = w.thumb; $("preview").alt = w.name; }
  catch (e) { showError(e.message); return; }
  runQueries(() => undefined, "&row=" + row, "work " + row);
}
async function start() {
  try { health = await api("/api/health"); } catch (e) { showError(e.message); $("info").textContent = ""; return; }
  const parts = [];
  if (health.classifier) { $("clfPanel").hidden = false; parts.push("classifier \u201c" + health.classifier.name + "\u201d (" +
    health.classifier.heads.map((h) => h.name + ": " + h.classes + " classes").join(", ") + ")"); }
  if (health.index) { $("simPanel").hidden = false; parts.push(health.index.works + " works, " + health.index.embedding +
    " embedding, " + health.index.index + " index"); }
  $("info").textContent = parts.join(" \\u00b7 ");
  const drop = $("drop"), file = $("file");
  file.onchange = () => queryFile(file.files[0]);
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); queryFile(e.dataTransfer.files[0]); };
  const row = new URLSearchParams(location.search).get("row");
  if (row !== null) queryRow(row);
  window.onpopstate = () => { const r = new URLSearchParams(location.search).get("row"); if (r !== null) queryRow(r); };
}
start();
</script></body></html>
"""
