// recloop console: draws each [data-chart] with uPlot, once per page (htmx swaps included),
// and sends the session's CSRF token with every htmx request.
(function () {
  "use strict";
  var COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

  function categoryAxis(categories) {
    return {
      splits: function () { return categories.map(function (_, i) { return i; }); },
      values: function (u, splits) {
        return splits.map(function (v) { return categories[v] === undefined ? "" : categories[v]; });
      },
      rotate: categories.length > 4 ? -30 : 0,
      size: categories.length > 4 ? 90 : 50,
    };
  }

  function whiskers(u) {
    var ctx = u.ctx, lows = u.data[2], highs = u.data[3], xs = u.data[0];
    ctx.save();
    var zero = u.valToPos(0, "y", true);
    if (zero >= u.bbox.top && zero <= u.bbox.top + u.bbox.height) {
      ctx.strokeStyle = "#9ca3af";
      ctx.setLineDash([4, 4]);
      ctx.beginPath();
      ctx.moveTo(u.bbox.left, zero);
      ctx.lineTo(u.bbox.left + u.bbox.width, zero);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.strokeStyle = COLOURS[0];
    ctx.lineWidth = 2 * (window.devicePixelRatio || 1);
    for (var i = 0; i < xs.length; i++) {
      if (lows[i] == null || highs[i] == null) continue;
      var x = u.valToPos(xs[i], "x", true);
      ctx.beginPath();
      ctx.moveTo(x, u.valToPos(lows[i], "y", true));
      ctx.lineTo(x, u.valToPos(highs[i], "y", true));
      ctx.stroke();
    }
    ctx.restore();
  }

  function options(spec, width) {
    var n = spec.x.length;
    var series = [{}];
    var hooks = {};
    spec.series.forEach(function (s, i) {
      var colour = COLOURS[(s.colour == null ? i : s.colour) % COLOURS.length];
      var one = { label: s.label, stroke: colour, width: s.dash ? 1 : 2, spanGaps: false };
      if (s.dash) one.dash = [6, 4];
      if (spec.kind === "forest") {
        one.stroke = COLOURS[0];
        one.paths = function () { return null; };
        one.points = { show: true, size: i === 0 ? 10 : 6, fill: i === 0 ? COLOURS[0] : "#fff" };
      } else if (spec.kind === "bars") {
        one.paths = uPlot.paths.bars({ size: [0.9, 80] });
        one.fill = colour + "99";
        one.points = { show: false };
      } else {
        one.points = { show: !s.dash && n <= 60, size: 7 };
      }
      series.push(one);
    });
    if (spec.kind === "forest") hooks.draw = [whiskers];
    var x = { time: !!spec.time };
    var axes = [{ label: spec.x_label }, { label: spec.y_label, size: 60 }];
    if (spec.categories) {
      x.range = [-0.5, Math.max(n - 0.5, 0.5)];
      axes[0] = Object.assign(axes[0], categoryAxis(spec.categories));
    }
    var bands = (spec.bands || []).map(function (b) {
      var colour = COLOURS[(spec.series[b[0]].colour || 0) % COLOURS.length];
      return { series: [b[0] + 1, b[1] + 1], fill: colour + "22" };
    });
    return {
      bands: bands,
      width: width,
      height: 260,
      scales: { x: x },
      axes: axes,
      series: series,
      hooks: hooks,
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
    };
  }

  function draw(el) {
    if (el.dataset.drawn) return;
    var spec = JSON.parse(el.dataset.chart);
    var data = [spec.x].concat(spec.series.map(function (s) { return s.values; }));
    var u = new uPlot(options(spec, Math.max(el.clientWidth, 240)), data, el);
    var points = 0;
    for (var i = 1; i < u.data.length; i++) {
      u.data[i].forEach(function (v) { if (v != null) points++; });
    }
    el.uplot = u;
    el.dataset.drawnSeries = String(u.series.length - 1);
    el.dataset.drawnPoints = String(points);
    el.dataset.drawn = "1";
  }

  function drawAll(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(draw);
  }

  window.addEventListener("resize", function () {
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.uplot) el.uplot.setSize({ width: Math.max(el.clientWidth, 240), height: 260 });
    });
  });
  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function () { drawAll(document); });
  document.addEventListener("htmx:configRequest", function (event) {
    var token = document.body.dataset.csrf;
    if (token) event.detail.headers["X-CSRF-Token"] = token;
  });
})();
