/* svcluster report, the atlas: a 2-D map of the embedding space (tasks/report/atlas.py) on one
   canvas, one point per place coloured by cluster. Hover shows the place (and its views when the
   report sampled it), click pins it on the geographic map too, drag draws a lasso (shift+drag: a
   box) whose places are listed with a link that downloads them as a map-making.app map.
   Runs after page.js and talks to it through window.svcReport. Offline. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var A = D.atlas, section = document.getElementById("atlas-section");
  var root = document.documentElement;
  if (!A) { section.querySelector(".atlas-note").textContent = D.atlas_note || "no atlas"; root.setAttribute("data-atlas-points", "0"); return; }
  var R = window.svcReport, P = D.points, N = P.lat.length, clusters = D.clusters;
  var canvas = document.getElementById("atlas"), ctx = canvas.getContext("2d");
  var W = 560, H = 560, pad = 10, dpr = Math.max(1, window.devicePixelRatio || 1);
  canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
  canvas.style.width = W + "px"; canvas.style.height = H + "px";
  section.querySelector(".atlas-note").textContent = A.note;
  var half = (Math.min(W, H) - 2 * pad) / 2, bx = new Float32Array(N), by = new Float32Array(N);
  for (var i = 0; i < N; i++) { bx[i] = W / 2 + A.x[i] * half; by[i] = H / 2 - A.y[i] * half; }
  var view = { s: 1, tx: 0, ty: 0 };
  function sx(x) { return x * view.s + view.tx; }
  function sy(y) { return y * view.s + view.ty; }
  var byCluster = clusters.map(function () { return []; });
  for (i = 0; i < N; i++) byCluster[P.c[i]].push(i);
  var order = clusters.map(function (c, ci) { return ci; }).sort(function (a, b) { return byCluster[b].length - byCluster[a].length; });
  var sampleOf = {};
  D.samples.forEach(function (s, k) { sampleOf[s.p] = k; });
  var radius = N > 50000 ? 1.1 : N > 10000 ? 1.6 : N > 2000 ? 2.4 : 3.2;
  var selected = null, selMask = new Uint8Array(N), pinned = -1, lasso = null;

  function draw() {
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#f4f6f9"; ctx.fillRect(0, 0, W, H);
    var r = radius * Math.min(3, Math.sqrt(view.s)), d = 2 * r, round = N <= 20000;
    order.forEach(function (ci) {
      var idx = byCluster[ci];
      ctx.globalAlpha = selected ? 0.18 : 0.8;
      ctx.fillStyle = clusters[ci].color; ctx.beginPath();
      for (var j = 0; j < idx.length; j++) {
        var x = sx(bx[idx[j]]), y = sy(by[idx[j]]);
        if (x < -d || y < -d || x > W + d || y > H + d) continue;
        if (round) { ctx.moveTo(x + r, y); ctx.arc(x, y, r, 0, 6.283185307179586); } else ctx.rect(x - r, y - r, d, d);
      }
      ctx.fill();
    });
    if (selected) {  // the selection on top, at full strength
      ctx.globalAlpha = 0.95;
      order.forEach(function (ci) {
        ctx.fillStyle = clusters[ci].color; ctx.beginPath();
        var idx = byCluster[ci];
        for (var j = 0; j < idx.length; j++) if (selMask[idx[j]]) ctx.rect(sx(bx[idx[j]]) - r, sy(by[idx[j]]) - r, d, d);
        ctx.fill();
      });
    }
    ctx.globalAlpha = 1;
    if (lasso && lasso.length > 1) {
      ctx.strokeStyle = "#111"; ctx.lineWidth = 1; ctx.setLineDash([4, 3]); ctx.beginPath();
      ctx.moveTo(lasso[0][0], lasso[0][1]); lasso.forEach(function (p) { ctx.lineTo(p[0], p[1]); }); ctx.closePath(); ctx.stroke(); ctx.setLineDash([]);
    }
    if (pinned >= 0) { ctx.strokeStyle = "#000"; ctx.lineWidth = 2; ctx.beginPath(); ctx.arc(sx(bx[pinned]), sy(by[pinned]), r + 4, 0, 6.283185307179586); ctx.stroke(); }
    gridDirty = true;
  }
  var pending = false;
  function requestDraw() { if (!pending) { pending = true; requestAnimationFrame(function () { pending = false; draw(); }); } }

  // hit-testing: 8px screen cells, rebuilt after the view changes
  var CELL = 8, grid = null, gridDirty = true, gcols = Math.ceil(W / CELL) + 1;
  function nearest(x, y) {
    if (gridDirty) {
      grid = new Map();
      for (var j = 0; j < N; j++) {
        var px = sx(bx[j]), py = sy(by[j]);
        if (px < 0 || py < 0 || px > W || py > H) continue;
        var key = Math.floor(py / CELL) * gcols + Math.floor(px / CELL), l = grid.get(key);
        if (l) l.push(j); else grid.set(key, [j]);
      }
      gridDirty = false;
    }
    var best = -1, bd = 64, cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
    for (var gy = cy - 1; gy <= cy + 1; gy++) for (var gx = cx - 1; gx <= cx + 1; gx++) {
      var list = grid.get(gy * gcols + gx); if (!list) continue;
      for (var k = 0; k < list.length; k++) {
        var dx = sx(bx[list[k]]) - x, dy = sy(by[list[k]]) - y, dd = dx * dx + dy * dy;
        if (dd < bd) { bd = dd; best = list[k]; }
      }
    }
    return best;
  }

  // ---- selection: every place inside a polygon (screen coordinates) -----------------------
  function inside(poly, x, y) {
    var c = false;
    for (var a = 0, b = poly.length - 1; a < poly.length; b = a++) {
      var xa = poly[a][0], ya = poly[a][1], xb = poly[b][0], yb = poly[b][1];
      if ((ya > y) !== (yb > y) && x < (xb - xa) * (y - ya) / (yb - ya) + xa) c = !c;
    }
    return c;
  }
  function selectPolygon(poly) {
    var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    poly.forEach(function (p) { x0 = Math.min(x0, p[0]); y0 = Math.min(y0, p[1]); x1 = Math.max(x1, p[0]); y1 = Math.max(y1, p[1]); });
    selMask.fill(0); var out = [];
    for (var j = 0; j < N; j++) {
      var x = sx(bx[j]), y = sy(by[j]);
      if (x >= x0 && x <= x1 && y >= y0 && y <= y1 && inside(poly, x, y)) { selMask[j] = 1; out.push(j); }
    }
    selected = out.length ? out : null;
    showSelection(out); requestDraw();
  }
  function box(x0, y0, x1, y1) { return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]; }

  // the selected places as a map-making.app map: {name, customCoordinates: [{lat, lng, heading, pitch, zoom, panoId, extra}]}
  function mapFile(rows) {
    var coords = rows.map(function (j) {
      var o = { lat: P.lat[j], lng: P.lng[j], heading: A.heading[j] == null ? 0 : A.heading[j], pitch: A.pitch[j] == null ? 0 : A.pitch[j], zoom: A.zoom[j] == null ? 0 : A.zoom[j], panoId: A.pano[j] };
      o.extra = { tags: [A.tag.replace("{cluster}", String(clusters[P.c[j]].id))] };
      return o;
    });
    return JSON.stringify({ name: A.map_name + " (atlas selection)", customCoordinates: coords });
  }
  var listBox = document.getElementById("atlas-selection"), fileUrl = null;
  function showSelection(rows) {
    listBox.textContent = "";
    if (fileUrl) { URL.revokeObjectURL(fileUrl); fileUrl = null; }
    if (!rows.length) { listBox.appendChild(el("p", { class: "muted", text: "Drag on the atlas to select places (shift+drag: a box)." })); return; }
    var text = mapFile(rows), href;
    if (text.length < 1500000) href = "data:application/json;charset=utf-8," + encodeURIComponent(text);
    else href = fileUrl = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    var counts = {};
    rows.forEach(function (j) { counts[P.c[j]] = (counts[P.c[j]] || 0) + 1; });
    listBox.appendChild(el("p", null, [el("b", { text: rows.length.toLocaleString("en-US") + " places selected" }), " · " +
      Object.keys(counts).sort(function (a, b) { return counts[b] - counts[a]; }).map(function (ci) { return "cluster " + clusters[ci].id + ": " + counts[ci]; }).join(", ")]));
    listBox.appendChild(el("a", { id: "atlas-download", class: "button", href: href, download: A.file_name, "data-count": String(rows.length), text: "Download the " + rows.length.toLocaleString("en-US") + " places as a map (map-making.app JSON)" }));
    var t = el("table", { class: "kv" }, [el("tr", null, ["cluster", "lat, lng", "region", "pano"].map(function (h) { return el("th", { text: h }); }))]);
    rows.slice(0, 200).forEach(function (j) {
      var tr = el("tr", { "data-point": String(j) }, [String(clusters[P.c[j]].id), P.lat[j].toFixed(5) + ", " + P.lng[j].toFixed(5), D.regions[P.r[j]], A.pano[j] || "–"].map(function (v) { return el("td", { text: v }); }));
      tr.addEventListener("click", function () { pinBoth(j); });
      t.appendChild(tr);
    });
    listBox.appendChild(t);
    if (rows.length > 200) listBox.appendChild(el("p", { class: "muted", text: "… the first 200 of " + rows.length.toLocaleString("en-US") + " shown; the download holds them all." }));
  }
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) { if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]); }
    (kids || []).forEach(function (c) { if (c != null) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }

  // ---- linked with the geographic map ----------------------------------------------------
  function setPinned(j) { pinned = j; root.setAttribute("data-atlas-pinned", String(j)); requestDraw(); }
  function pinBoth(j) { setPinned(j); if (R) R.pin(j); }
  if (R) R.onPin.push(function (j) { if (pinned !== j) setPinned(j); });

  // ---- mouse ----------------------------------------------------------------------------
  var tip = document.getElementById("atlas-tooltip"), drag = null;
  function at(e) { var r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
  canvas.addEventListener("mousemove", function (e) {
    var p = at(e);
    if (drag) {
      if (drag.box) lasso = box(drag.p[0], drag.p[1], p[0], p[1]); else lasso.push(p);
      drag.moved = drag.moved || Math.abs(p[0] - drag.p[0]) + Math.abs(p[1] - drag.p[1]) > 4;
      tip.hidden = true; requestDraw(); return;
    }
    var j = nearest(p[0], p[1]);
    if (j < 0) { tip.hidden = true; return; }
    tip.textContent = "";
    var c = clusters[P.c[j]];
    tip.appendChild(el("b", { text: "Cluster " + c.id + (c.names.length ? " · " + c.names[0] : "") }));
    tip.appendChild(el("div", { text: P.lat[j].toFixed(5) + ", " + P.lng[j].toFixed(5) + " · " + D.regions[P.r[j]] }));
    var s = sampleOf[j] != null ? D.samples[sampleOf[j]] : null;
    if (s && s.views.length) {
      var v = el("div", { class: "atlas-views" });
      s.views.forEach(function (w) { v.appendChild(el("img", { src: w.src, alt: "heading " + w.h + "°" })); });
      tip.appendChild(v);
    } else tip.appendChild(el("div", { class: "muted-tip", text: "no views embedded (the report keeps the sampled places' views)" }));
    tip.style.left = (p[0] + 18) + "px"; tip.style.top = (p[1] + 12) + "px"; tip.hidden = false;
  });
  canvas.addEventListener("mousedown", function (e) { var p = at(e); drag = { p: p, box: e.shiftKey, moved: false }; lasso = [p]; });
  canvas.addEventListener("mouseup", function (e) {
    var d = drag; drag = null; if (!d) return;
    var poly = lasso; lasso = null;
    if (d.moved && poly && poly.length > 2) { selectPolygon(poly); return; }
    var p = at(e), j = nearest(p[0], p[1]);
    if (j >= 0) pinBoth(j); else { selected = null; showSelection([]); requestDraw(); }
  });
  canvas.addEventListener("mouseleave", function () { tip.hidden = true; if (drag) { drag = null; lasso = null; requestDraw(); } });
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    var p = at(e), f = Math.exp(-e.deltaY * 0.0015), ns = Math.max(1, Math.min(200, view.s * f)); f = ns / view.s;
    view.tx = p[0] - (p[0] - view.tx) * f; view.ty = p[1] - (p[1] - view.ty) * f; view.s = ns;
    if (ns === 1) view = { s: 1, tx: 0, ty: 0 };
    requestDraw();
  }, { passive: false });
  canvas.addEventListener("dblclick", function () { view = { s: 1, tx: 0, ty: 0 }; requestDraw(); });

  // ---- first render ---------------------------------------------------------------------
  // report.html#atlas-box=x0,y0,x1,y1 selects the places in that box of atlas coordinates
  // ([-1, 1], y up) through the same code as a drag (a link to a selection; the browser test).
  var hash = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (kv) { var q = kv.split("="); if (q[0]) hash[q[0]] = decodeURIComponent(q[1] || ""); });
  if (hash.pin) D.samples.forEach(function (s) { if (s.id === hash.pin) pinned = s.p; });  // pinned by page.js before us
  showSelection([]);
  draw();
  if (hash["atlas-box"]) {
    var b = hash["atlas-box"].split(",").map(Number);
    selectPolygon(box(W / 2 + b[0] * half, H / 2 - b[1] * half, W / 2 + b[2] * half, H / 2 - b[3] * half));
    draw();
  }
  var painted = 0, img = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  for (var q = 0; q < img.length; q += 4 * 7) if (Math.max(img[q], img[q + 1], img[q + 2]) - Math.min(img[q], img[q + 1], img[q + 2]) > 40) painted++;
  root.setAttribute("data-atlas-points", String(N));
  root.setAttribute("data-atlas-painted", String(painted));
  root.setAttribute("data-atlas-pinned", String(pinned));
  if (hash.bench) {  // full redraws of the atlas (zoom / pan / selection cost)
    var tb = performance.now();
    for (var rep = 0; rep < 6; rep++) { view = rep % 2 ? { s: 2, tx: -W / 2, ty: -H / 2 } : { s: 1, tx: 0, ty: 0 }; draw(); }
    ctx.getImageData(0, 0, 1, 1);
    root.setAttribute("data-atlas-redraw-ms", ((performance.now() - tb) / 6).toFixed(1));
    view = { s: 1, tx: 0, ty: 0 }; draw();
  }
})();
