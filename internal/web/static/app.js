// ward UI behaviour. No inline scripts (the Content-Security-Policy forbids
// them): everything hooks onto data attributes here.
(function () {
  "use strict";

  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }

  // Every htmx request carries the session's CSRF token.
  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrf();
  });

  // A failed htmx request shows its error page's message instead of
  // failing silently.
  document.addEventListener("htmx:beforeSwap", function (e) {
    if (e.detail.xhr.status >= 400 && e.detail.xhr.status !== 499) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });

  // Destructive forms ask first: <form data-confirm="Delete X?">, or one
  // button of a form: <button data-confirm-button="Turn off?">.
  document.addEventListener("submit", function (e) {
    var msg = (e.submitter && e.submitter.getAttribute("data-confirm-button")) ||
      (e.target.getAttribute && e.target.getAttribute("data-confirm"));
    if (msg && !window.confirm(msg)) {
      e.preventDefault();
    }
  }, true);

  var charts = new WeakMap();

  function human(n) {
    var u = ["B", "K", "M", "G", "T"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? (n >= 100 ? n.toFixed(0) : n.toFixed(1)) : n) + " " + u[i] + (i ? "iB" : "");
  }

  // Draw every .chart[data-points] (JSON [[t],[up],[down]]) with uPlot.
  function drawCharts(root) {
    if (typeof uPlot === "undefined") { return; }
    root.querySelectorAll(".chart[data-points]").forEach(function (el) {
      if (charts.has(el)) { return; }
      var data;
      try { data = JSON.parse(el.getAttribute("data-points")); } catch (err) { return; }
      if (!data[0].length) {
        el.textContent = "No traffic in this period.";
        el.classList.add("empty");
        charts.set(el, null);
        return;
      }
      var width = Math.max(260, el.clientWidth || 600);
      var narrow = width < 500;
      // The x axis spans the whole window asked for (data-from/data-to,
      // Unix seconds), not just the minutes that had traffic.
      var from = Number(el.getAttribute("data-from")), to = Number(el.getAttribute("data-to"));
      var xScale = {time: true};
      if (from && to) { xScale.range = function () { return [from, to]; }; }
      var plot = new uPlot({
        width: width, height: 180,
        scales: {x: xScale},
        series: [{}, {label: "up", stroke: "#1f5eff", value: function (u, v) { return v == null ? "" : human(v); }},
                     {label: "down", stroke: "#1e7d32", value: function (u, v) { return v == null ? "" : human(v); }}],
        axes: [{}, {values: function (u, vals) { return vals.map(human); }, size: narrow ? 64 : 80,
                    font: narrow ? "10px system-ui" : "12px system-ui"}]
      }, data, el);
      charts.set(el, plot);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });
  document.addEventListener("htmx:afterSettle", function (e) { drawCharts(e.target); });
  window.addEventListener("load", function () { drawCharts(document); });
})();
