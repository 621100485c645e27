/* svcluster report: draws the cluster map on one canvas and builds the sections from the
   embedded JSON. Offline: no request leaves the page. */
(function () {
  "use strict";
  var t0 = performance.now();
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var P = D.points, N = P.lat.length;
  var clusters = D.clusters;

  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "style") e.style.cssText = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (c) { if (c != null) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }
  function fmt(n, d) { return n == null ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: d == null ? 0 : d, minimumFractionDigits: d == null ? 0 : d }); }
  function pct(x) { return (100 * x).toFixed(x < 0.1 ? 1 : 0) + "%"; }
  function clusterLabel(ci) {
    var c = clusters[ci];
    return "Cluster " + c.id + (c.names.length ? " · " + c.names[0] : "");
  }
  var sampleOfPoint = {};
  D.samples.forEach(function (s, i) { if (s.p >= 0) sampleOfPoint[s.p] = i; });

  // ---- header -------------------------------------------------------------------------
  document.getElementById("title").textContent = D.title;
  document.getElementById("subtitle").textContent = D.subtitle;
  var noticeList = document.getElementById("notices");
  (D.notices || []).forEach(function (n) { noticeList.appendChild(el("li", { text: n })); });

  // ---- map ----------------------------------------------------------------------------
  var canvas = document.getElementById("map"), ctx = canvas.getContext("2d");
  var W = D.map.width, H = D.map.height, dpr = Math.max(1, window.devicePixelRatio || 1);
  canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
  canvas.style.width = W + "px"; canvas.style.height = H + "px";
  document.querySelector("#map-wrap .hint").style.maxWidth = Math.max(W, 320) + "px";
  var B = D.map.bounds, kx = Math.cos(((B[0] + B[1]) / 2) * Math.PI / 180), pad = D.map.pad;
  var baseScale = Math.min((W - 2 * pad) / Math.max((B[3] - B[2]) * kx, 1e-6), (H - 2 * pad) / Math.max(B[1] - B[0], 1e-6));
  var cLng = (B[2] + B[3]) / 2, cLat = (B[0] + B[1]) / 2;
  var view = { s: 1, tx: 0, ty: 0 };
  var bx = new Float32Array(N), by = new Float32Array(N);
  for (var i = 0; i < N; i++) { var xy = project(P.lat[i], P.lng[i]); bx[i] = xy[0]; by[i] = xy[1]; }
  function project(lat, lng) { return [W / 2 + (lng - cLng) * kx * baseScale, H / 2 - (lat - cLat) * baseScale]; }
  function unproject(x, y) { return [cLat - (y - H / 2) / baseScale, cLng + (x - W / 2) / (kx * baseScale)]; }
  function sx(x) { return x * view.s + view.tx; }
  function sy(y) { return y * view.s + view.ty; }
  // points grouped by cluster, biggest cluster drawn first so small ones stay visible
  var byCluster = clusters.map(function () { return []; });
  for (i = 0; i < N; i++) byCluster[P.c[i]].push(i);
  var drawOrder = clusters.map(function (c, ci) { return ci; }).sort(function (a, b) { return byCluster[b].length - byCluster[a].length; });
  var highlighted = -1, pinned = -1;
  var radius = N > 50000 ? 1.2 : N > 10000 ? 1.8 : N > 2000 ? 2.6 : 3.4;
  // past 20 clusters the colours repeat and the marker's shape tells clusters apart
  var shapes = {};
  clusters.forEach(function (c) { shapes[c.marker || "circle"] = 1; });
  var manyShapes = Object.keys(shapes).length > 1;
  if (manyShapes) radius = Math.max(radius, 2.6);
  function markerPath(marker, x, y, r, round) {
    if (marker === "square") { ctx.rect(x - 0.9 * r, y - 0.9 * r, 1.8 * r, 1.8 * r); return; }
    if (marker === "triangle") { ctx.moveTo(x, y - 1.2 * r); ctx.lineTo(x + 1.1 * r, y + 0.9 * r); ctx.lineTo(x - 1.1 * r, y + 0.9 * r); ctx.closePath(); return; }
    if (marker === "diamond") { ctx.moveTo(x, y - 1.25 * r); ctx.lineTo(x + 1.25 * r, y); ctx.lineTo(x, y + 1.25 * r); ctx.lineTo(x - 1.25 * r, y); ctx.closePath(); return; }
    if (marker === "cross") { var t = Math.max(r / 2.5, 0.8); ctx.rect(x - 1.2 * r, y - t, 2.4 * r, 2 * t); ctx.rect(x - t, y - 1.2 * r, 2 * t, 2.4 * r); return; }
    if (round) { ctx.moveTo(x + r, y); ctx.arc(x, y, r, 0, 6.283185307179586); }
    else ctx.rect(x - r, y - r, 2 * r, 2 * r);
  }

  function drawGraticule() {
    var step = D.map.graticule, lat0, lng0;
    var tl = invView(0, 0), br = invView(W, H);
    var ll1 = unproject(tl[0], tl[1]), ll2 = unproject(br[0], br[1]);
    var s = step;
    while ((ll1[0] - ll2[0]) / s > 14) s *= 2;
    ctx.strokeStyle = "rgba(80,100,120,.18)"; ctx.lineWidth = 1; ctx.fillStyle = "rgba(60,70,80,.65)"; ctx.font = "10px system-ui, sans-serif";
    ctx.beginPath();
    for (lat0 = Math.ceil(ll2[0] / s) * s; lat0 <= ll1[0]; lat0 += s) { var y = sy(project(lat0, cLng)[1]); ctx.moveTo(0, y); ctx.lineTo(W, y); }
    for (lng0 = Math.ceil(ll1[1] / s) * s; lng0 <= ll2[1]; lng0 += s) { var x = sx(project(cLat, lng0)[0]); ctx.moveTo(x, 0); ctx.lineTo(x, H); }
    ctx.stroke();
    for (lat0 = Math.ceil(ll2[0] / s) * s; lat0 <= ll1[0]; lat0 += s) ctx.fillText(degLabel(lat0, "N", "S"), 3, sy(project(lat0, cLng)[1]) - 2);
    for (lng0 = Math.ceil(ll1[1] / s) * s; lng0 <= ll2[1]; lng0 += s) {
      var lx = sx(project(cLat, lng0)[0]);
      if (lx < W - 34) ctx.fillText(degLabel(lng0, "E", "W"), lx + 2, H - 4);
    }
  }
  function degLabel(v, pos, neg) { var r = Math.round(Math.abs(v) * 10) / 10; return r + "°" + (v >= 0 ? pos : neg); }
  function invView(x, y) { return [(x - view.tx) / view.s, (y - view.ty) / view.s]; }

  // coastlines and country borders (Natural Earth, tasks/report/outlines.py) and, where the
  // map's places carry region codes, region borders (tasks/report/regions.py), projected once
  var outlines = ["coast", "border", "region"].map(function (kind) {
    return ((D.outlines || {})[kind] || []).map(function (line) {
      var xy = new Float32Array(line.length);
      for (var i = 0; i < line.length; i += 2) { var p = project(line[i], line[i + 1]); xy[i] = p[0]; xy[i + 1] = p[1]; }
      return xy;
    });
  });
  function drawOutlines() {
    [["#7f93a3", 1.1, []], ["#a7b6c2", 0.9, [4, 3]], ["#c4b0ce", 0.8, [2, 2]]].forEach(function (style, k) {
      ctx.strokeStyle = style[0]; ctx.lineWidth = style[1]; ctx.setLineDash(style[2]); ctx.beginPath();
      outlines[k].forEach(function (xy) {
        ctx.moveTo(sx(xy[0]), sy(xy[1]));
        for (var i = 2; i < xy.length; i += 2) ctx.lineTo(sx(xy[i]), sy(xy[i + 1]));
      });
      ctx.stroke();
    });
    ctx.setLineDash([]);
  }

  function draw() {
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#eef3f7"; ctx.fillRect(0, 0, W, H);
    drawGraticule();
    drawOutlines();
    var r = radius * Math.min(3, Math.sqrt(view.s)), d = 2 * r, round = N <= 20000 || manyShapes;
    drawOrder.forEach(function (ci) {
      var idx = byCluster[ci], marker = clusters[ci].marker || "circle";
      ctx.globalAlpha = highlighted < 0 || highlighted === ci ? 0.85 : 0.12;
      ctx.fillStyle = clusters[ci].color;
      ctx.beginPath();
      for (var j = 0; j < idx.length; j++) {
        var x = sx(bx[idx[j]]), y = sy(by[idx[j]]);
        if (x < -d || y < -d || x > W + d || y > H + d) continue;
        markerPath(marker, x, y, r, round);
      }
      ctx.fill();
    });
    ctx.globalAlpha = 1;
    if (pinned >= 0) {
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2; ctx.beginPath();
      ctx.arc(sx(bx[pinned]), sy(by[pinned]), r + 4, 0, 2 * Math.PI); ctx.stroke();
    }
    gridDirty = true;
  }

  // hit-testing: a grid of 8px cells over the screen, rebuilt after the view changes
  var CELL = 8, grid = null, gridDirty = true, gcols = 0;
  function buildGrid() {
    gcols = Math.ceil(W / CELL) + 1;
    grid = new Map();
    for (var j = 0; j < N; j++) {
      if (highlighted >= 0 && P.c[j] !== highlighted) continue;
      var x = sx(bx[j]), y = sy(by[j]);
      if (x < 0 || y < 0 || x > W || y > H) continue;
      var key = Math.floor(y / CELL) * gcols + Math.floor(x / CELL), list = grid.get(key);
      if (list) list.push(j); else grid.set(key, [j]);
    }
    gridDirty = false;
  }
  function nearest(x, y) {
    if (gridDirty) buildGrid();
    var best = -1, bd = 64, cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
    for (var gy = cy - 1; gy <= cy + 1; gy++) for (var gx = cx - 1; gx <= cx + 1; gx++) {
      var list = grid.get(gy * gcols + gx); if (!list) continue;
      for (var j = 0; j < list.length; j++) {
        var dx = sx(bx[list[j]]) - x, dy = sy(by[list[j]]) - y, dd = dx * dx + dy * dy;
        if (dd < bd) { bd = dd; best = list[j]; }
      }
    }
    return best;
  }
  function pointInfo(j) {
    var ci = P.c[j];
    return [
      clusterLabel(ci),
      P.lat[j].toFixed(5) + ", " + P.lng[j].toFixed(5),
      "region: " + D.regions[P.r[j]],
      "tags: " + (D.tagsets[P.t[j]] || "none"),
      "distance to centroid: " + (P.d[j] == null ? "–" : P.d[j].toFixed(3))
    ];
  }
  var tip = document.getElementById("tooltip"), dragging = null, moved = false;
  canvas.addEventListener("mousemove", function (e) {
    var rect = canvas.getBoundingClientRect(), x = e.clientX - rect.left, y = e.clientY - rect.top;
    if (dragging) {
      view.tx = dragging.tx + (e.clientX - dragging.x); view.ty = dragging.ty + (e.clientY - dragging.y);
      moved = moved || Math.abs(e.clientX - dragging.x) + Math.abs(e.clientY - dragging.y) > 3;
      tip.hidden = true; requestDraw(); return;
    }
    var j = nearest(x, y);
    if (j < 0) { tip.hidden = true; return; }
    tip.textContent = ""; pointInfo(j).forEach(function (line, k) { tip.appendChild(el(k ? "div" : "b", { text: line })); });
    if (sampleOfPoint[j] != null) tip.appendChild(el("div", { text: "click to see its views" }));
    tip.style.left = (x + 18) + "px"; tip.style.top = (y + 12) + "px"; tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", function () { tip.hidden = true; dragging = null; });
  canvas.addEventListener("mousedown", function (e) { dragging = { x: e.clientX, y: e.clientY, tx: view.tx, ty: view.ty }; moved = false; });
  canvas.addEventListener("mouseup", function (e) {
    var wasDrag = moved; dragging = null;
    if (wasDrag) return;
    var rect = canvas.getBoundingClientRect(), j = nearest(e.clientX - rect.left, e.clientY - rect.top);
    pin(j);
  });
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    var rect = canvas.getBoundingClientRect(), x = e.clientX - rect.left, y = e.clientY - rect.top;
    var f = Math.exp(-e.deltaY * 0.0015), ns = Math.max(1, Math.min(200, view.s * f)); f = ns / view.s;
    view.tx = x - (x - view.tx) * f; view.ty = y - (y - view.ty) * f; view.s = ns; requestDraw();
  }, { passive: false });
  canvas.addEventListener("dblclick", function () { view = { s: 1, tx: 0, ty: 0 }; requestDraw(); });
  var pending = false;
  function requestDraw() { if (!pending) { pending = true; requestAnimationFrame(function () { pending = false; draw(); }); } }

  function pin(j) {
    pinned = j; requestDraw();
    document.documentElement.setAttribute("data-map-pinned", String(j));
    window.svcReport.onPin.forEach(function (f) { f(j); });  // linked views (the atlas)
    var box = document.getElementById("pinned"); box.textContent = "";
    if (j < 0) { box.appendChild(el("p", { class: "muted", text: "Click a point on the map." })); return; }
    var lines = pointInfo(j);
    box.appendChild(el("h3", { text: lines[0] }));
    lines.slice(1).forEach(function (l) { box.appendChild(el("div", { text: l })); });
    var si = sampleOfPoint[j], first = si != null && D.samples[si].views.length ? D.samples[si].views[0] : null;
    box.appendChild(el("a", { class: "streetview", href: first ? first.url : "https://www.google.com/maps/@?api=1&map_action=pano&viewpoint=" + P.lat[j] + "," + P.lng[j], target: "_blank", rel: "noopener", text: "open in Street View (online)" }));
    if (si != null) box.appendChild(viewsOf(D.samples[si], 120));
    else box.appendChild(el("p", { class: "muted", text: "No views embedded for this location: the report keeps thumbnails of the sampled locations only." }));
  }

  window.svcReport = { pin: pin, onPin: [] };  // what other views of the page (atlas.js) link to

  // ---- legend -------------------------------------------------------------------------
  var legend = document.getElementById("legend");
  clusters.forEach(function (c, ci) {
    var li = el("li", { "data-cluster": c.id, title: "highlight cluster " + c.id }, [
      el("span", { class: "swatch " + (c.marker || "circle"), style: "background:" + c.color }),
      el("span", { class: "legend-name", text: clusterLabel(ci) }),
      el("span", { class: "legend-size", text: fmt(c.size) + " · " + pct(c.share) })
    ]);
    li.addEventListener("click", function () {
      highlighted = highlighted === ci ? -1 : ci;
      Array.prototype.forEach.call(legend.children, function (x, k) {
        x.className = highlighted < 0 ? "" : k === highlighted ? "on" : "off";
      });
      requestDraw();
    });
    legend.appendChild(li);
  });

  // ---- cluster sections ---------------------------------------------------------------
  function viewsOf(s, size) {
    var box = el("div", { class: "views" });
    if (!s.views.length) box.appendChild(el("div", { class: "noview", text: "no views fetched" }));
    s.views.forEach(function (v) {
      var img = el("img", { src: v.src, alt: "heading " + v.h + "°", title: "heading " + v.h + "°" + (v.date ? " · " + v.date : "") + " · click: this view in Street View (online)", loading: "lazy" });
      if (size) img.style.cssText = "width:" + size + "px;height:" + size + "px";
      box.appendChild(v.url ? el("a", { class: "streetview", href: v.url, target: "_blank", rel: "noopener" }, [img]) : img);
    });
    return box;
  }
  function card(si, kind) {
    var s = D.samples[si];
    return el("div", { class: "loc " + kind, "data-location": s.id }, [
      viewsOf(s),
      el("div", { class: "cap", text: (kind === "edge" ? "edge · " : "typical · ") + s.lat.toFixed(3) + ", " + s.lng.toFixed(3) + " · " + s.region + (s.tags ? " · " + s.tags : "") })
    ]);
  }
  var list = document.getElementById("cluster-list");
  document.getElementById("naming-note").textContent = D.naming_note;
  clusters.forEach(function (c, ci) {
    var facts = el("div", { class: "facts" }, [
      el("span", null, [el("b", { text: fmt(c.size) }), " locations (" + pct(c.share) + ")"]),
      el("span", null, ["spread ", el("b", { text: fmt(c.spread_km) + " km" }), " (median to its geographic centre " + c.centroid[0].toFixed(2) + ", " + c.centroid[1].toFixed(2) + ")"]),
      el("span", null, ["regions ", el("b", { text: c.regions.map(function (r) { return r[0] + " " + pct(r[1]); }).join(", ") || "–" })]),
      c.tags.length ? el("span", null, ["map tags ", el("b", { text: c.tags.map(function (t) { return t[0] + " " + pct(t[1]); }).join(", ") })]) : null
    ]);
    var sheet = el("div", { class: "sheet" });
    c.typical.forEach(function (si) { sheet.appendChild(card(si, "typical")); });
    c.edges.forEach(function (si) { sheet.appendChild(card(si, "edge")); });
    list.appendChild(el("div", { class: "cluster", id: "cluster-" + c.id, "data-cluster": c.id, style: "border-left-color:" + c.color }, [
      el("h3", null, [el("span", { class: "swatch " + (c.marker || "circle"), style: "display:inline-block;vertical-align:-2px;margin-right:6px;background:" + c.color }), "Cluster " + c.id]),
      c.names.length ? el("div", { class: "names", text: c.names.join(" · ") }) : null,
      facts, sheet
    ]));
  });

  // ---- look-alikes --------------------------------------------------------------------
  document.getElementById("lookalike-note").textContent = D.lookalike_note;
  var pairs = document.getElementById("pair-list");
  D.lookalikes.forEach(function (p) {
    pairs.appendChild(el("div", { class: "pair", "data-cluster": clusters[p.c].id }, [
      card(p.a, "typical"),
      el("div", { class: "between" }, [
        el("div", { class: "km", text: fmt(p.km) + " km" }),
        el("div", { text: "similarity " + p.sim.toFixed(3) }),
        el("div", { style: "color:" + clusters[p.c].color, text: clusterLabel(p.c) })
      ]),
      card(p.b, "typical")
    ]));
  });
  if (!D.lookalikes.length) pairs.appendChild(el("p", { class: "muted", text: "none found" }));

  // ---- outliers and duplicate panoramas --------------------------------------------------
  var outlierList = document.getElementById("outlier-list");
  document.getElementById("outlier-head").textContent = "Outliers (" + fmt(D.outliers_total) + (D.outliers_total > D.outliers.length ? ", the first " + D.outliers.length : "") + ")";
  D.outliers.forEach(function (o) {
    var s = D.samples[o.s];
    outlierList.appendChild(el("div", { class: "loc edge outlier", "data-location": s.id, "data-cluster": clusters[o.c].id }, [
      viewsOf(s),
      el("div", { class: "cap", text: "#" + o.rank + " · " + o.rel.toFixed(2) + "× the median distance · " + clusterLabel(o.c) + " · " + s.lat.toFixed(3) + ", " + s.lng.toFixed(3) })
    ]));
  });
  if (!D.outliers.length) outlierList.appendChild(el("p", { class: "muted", text: "none: every place is within its cluster's fence" }));
  var dupList = document.getElementById("duplicate-list");
  document.getElementById("duplicate-head").textContent = "Duplicate panoramas (" + fmt(D.duplicates_total) + " pairs" + (D.duplicates_total > D.duplicates.length ? ", the first " + D.duplicates.length : "") + ")";
  D.duplicates.forEach(function (p) {
    dupList.appendChild(el("div", { class: "pair duplicate", "data-cluster": clusters[p.c].id }, [
      card(p.a, "typical"),
      el("div", { class: "between" }, [
        el("div", { class: "km", text: p.km == null ? "–" : fmt(p.km, 2) + " km" }),
        el("div", { text: "cosine " + p.cos.toFixed(4) }),
        el("div", { style: "color:" + clusters[p.c].color, text: clusterLabel(p.c) })
      ]),
      card(p.b, "typical")
    ]));
  });
  if (!D.duplicates.length) dupList.appendChild(el("p", { class: "muted", text: "none found" }));

  // ---- run ----------------------------------------------------------------------------
  var details = document.getElementById("run-details");
  function kvTable(obj) {
    var t = el("table", { class: "kv" });
    Object.keys(obj).forEach(function (k) {
      var v = obj[k]; if (v == null || v === "") return;
      t.appendChild(el("tr", null, [el("th", { text: k }), el("td", { text: typeof v === "object" ? JSON.stringify(v) : String(v) })]));
    });
    return t;
  }
  details.appendChild(el("h3", { text: "Parameters and metrics" }));
  details.appendChild(kvTable(D.run));
  if (Object.keys(D.params).length) { details.appendChild(el("h3", { text: "All parameters" })); details.appendChild(kvTable(D.params)); }
  if (D.sweep_svg) {
    details.appendChild(el("h3", { text: "k-sweep" }));
    var holder = el("div", { id: "sweep" }); holder.innerHTML = D.sweep_svg; details.appendChild(holder);
  }
  if (D.lineage.length) {
    details.appendChild(el("h3", { text: "How the clusters split (cluster_lineage)" }));
    if (D.lineage_svg) { var sankey = el("div", { id: "lineage-sankey" }); sankey.innerHTML = D.lineage_svg; details.appendChild(sankey); }
    var lt = el("table", { class: "kv", id: "lineage" }, [el("tr", null, ["coarse run", "k", "cluster", "finer run", "k", "cluster", "places", "share of coarse"].map(function (h) { return el("th", { text: h }); }))]);
    D.lineage.forEach(function (r) {
      lt.appendChild(el("tr", null, [r.name_coarse, String(r.k_coarse), String(r.cluster_coarse), r.name_fine, String(r.k_fine), String(r.cluster_fine), fmt(r.places), pct(r.share_of_coarse)].map(function (v) { return el("td", { text: v }); })));
    });
    details.appendChild(lt);
  }
  details.appendChild(el("h3", { text: "Comparisons" }));
  if (!D.comparisons.length) details.appendChild(el("p", { class: "muted", text: "No previous version of this map and no tags in it to compare with." }));
  else {
    var t = el("table", { class: "kv", id: "comparisons" }, [el("tr", null, ["against", "locations", "ARI", "NMI", "note"].map(function (h) { return el("th", { text: h }); }))]);
    D.comparisons.forEach(function (c) {
      t.appendChild(el("tr", null, [c.against, fmt(c.locations), c.ari == null ? "–" : c.ari.toFixed(3), c.nmi == null ? "–" : c.nmi.toFixed(3), c.note || ""].map(function (v) { return el("td", { text: v }); })));
    });
    details.appendChild(t);
    details.appendChild(el("p", { class: "muted", text: "ARI 1 = the same partition, 0 = chance agreement; NMI 1 = the same, 0 = independent." }));
  }

  // ---- first render -------------------------------------------------------------------
  // a link can pin a location or highlight a cluster: report.html#pin=<location id>&cluster=<n>
  var hash = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (kv) { var p = kv.split("="); if (p[0]) hash[p[0]] = decodeURIComponent(p[1] || ""); });
  if (hash.cluster != null) clusters.forEach(function (c, ci) { if (String(c.id) === hash.cluster) legend.children[ci].click(); });
  if (hash.pin) D.samples.forEach(function (s) { if (s.id === hash.pin) pin(s.p); });
  draw();
  var painted = 0, img = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  for (var q = 0; q < img.length; q += 4 * 7) if (Math.max(img[q], img[q + 1], img[q + 2]) - Math.min(img[q], img[q + 1], img[q + 2]) > 40) painted++;
  var root = document.documentElement;
  root.setAttribute("data-painted", String(painted));
  root.setAttribute("data-outlines", String(outlines[0].length + outlines[1].length));
  root.setAttribute("data-region-lines", String(outlines[2].length));
  root.setAttribute("data-render-ms", (performance.now() - t0).toFixed(1));
  root.setAttribute("data-points", String(N));
  if (hash.bench) {  // report.html#bench: time full redraws of the map (zoom/pan/highlight cost)
    var tb = performance.now();
    for (var rep = 0; rep < 5; rep++) { highlighted = rep % 2 ? 0 : -1; draw(); }
    ctx.getImageData(0, 0, 1, 1);
    highlighted = -1; draw();
    root.setAttribute("data-redraw-ms", ((performance.now() - tb) / 6).toFixed(1));
  }
  performance.mark("svcluster-rendered");
  root.setAttribute("data-rendered", "1");
})();
