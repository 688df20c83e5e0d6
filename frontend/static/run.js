/* GenScope dashboard, one run's page: live progress while it runs, then its summary, figures
 * and tables (measures, sharpness, bound breakdown) and the report download.
 * Helpers come from the core (app.js, window.GenScope). */
(function (gs) {
  "use strict";

  var HEADLINE = gs.HEADLINE, $ = gs.$, el = gs.el, clear = gs.clear, fmt = gs.fmt, pct = gs.pct,
    fmtDate = gs.fmtDate, api = gs.api, setProgress = gs.setProgress, showError = gs.showError,
    statusBadge = gs.statusBadge, isLive = gs.isLive, downloadBlob = gs.downloadBlob,
    renderFigures = gs.renderFigures;

  function initRun() {
    var root = $("#run-root");
    var runId = root.getAttribute("data-run-id");
    var drawn = false;
    var delay = 1000;

    function header(run) {
      var name = run.name || run.id;
      $("#run-title").textContent = name;
      $("#crumb-name").textContent = name;
      document.title = name + " · GenScope";
      var badge = $("#run-status");
      badge.className = "badge badge-" + run.status;
      badge.textContent = run.status;
      var head = run.report_head || {};
      var model = head.model || {};
      var bits = ["id " + run.id, "dataset " + (run.dataset || "?")];
      if (model.arch || model.format) bits.push("model " + (model.arch || model.format));
      if (model.num_params) bits.push(Number(model.num_params).toLocaleString() + " parameters");
      if (run.created_at) bits.push("created " + fmtDate(run.created_at));
      $("#run-meta").textContent = bits.join(" · ");
    }

    function progress(run) {
      var card = $("#progress-card");
      var live = isLive(run.status);
      card.hidden = !live;
      if (!live) return;
      setProgress($("#run-progress"), run.progress);
      $("#run-message").textContent = (run.status === "queued" ? "Waiting for a worker… " : "") + (run.message || "") + " " + Math.round((run.progress || 0) * 100) + "%";
      var list = clear($("#measure-progress"));
      var done = {};
      (run.results || []).forEach(function (r) {
        done[r.measure_id] = r.status;
        list.appendChild(el("li", { class: r.status === "ok" ? "done" : "failed" }, r.measure_id + (r.seconds ? " (" + fmt(r.seconds) + " s)" : "")));
      });
      (run.measures || []).forEach(function (m) {
        if (!done[m] && m.indexOf(".") > 0) list.appendChild(el("li", { class: "pending" }, m));
      });
    }

    function summary(run, payload) {
      var head = (run.report_head || {}).metrics || {};
      var h = payload.headline || {};
      var box = clear($("#summary"));
      var stats = [
        ["Train accuracy", pct(head.train_accuracy)],
        ["Test accuracy", pct(head.test_accuracy)],
        ["Generalization gap", pct(head.generalization_gap)],
      ];
      HEADLINE.forEach(function (x) {
        if (h[x[0]] !== null && h[x[0]] !== undefined) stats.push([x[1], fmt(h[x[0]])]);
      });
      stats.forEach(function (s) {
        box.appendChild(el("div", { class: "stat" }, el("div", { class: "label" }, s[0]), el("div", { class: "value" }, s[1])));
      });
      box.hidden = false;
    }

    function tables(payload, run) {
      $("#tables").hidden = false;
      var mt = clear($("#measures-table"));
      mt.appendChild(el("thead", null, el("tr", null, el("th", null, "Measure"), el("th", { class: "num" }, "Value"), el("th", null, "Better"), el("th", { class: "num" }, "Seconds"), el("th", null, "Status"), el("th", null, "Note"))));
      var tb = el("tbody");
      (payload.measures || []).forEach(function (m) {
        tb.appendChild(
          el(
            "tr",
            null,
            el("td", { class: "mono" }, m.id),
            el("td", { class: "num" }, fmt(m.value)),
            el("td", null, m.direction === "higher_is_better" ? "↑ higher" : m.direction === "lower_is_better" ? "↓ lower" : ""),
            el("td", { class: "num" }, fmt(m.seconds)),
            el("td", null, statusBadge(m.status === "ok" ? "succeeded" : "failed")),
            el("td", { class: "muted" }, m.note || "")
          )
        );
      });
      mt.appendChild(tb);

      var sharp = payload.sharpness || [];
      $("#sharpness-card").hidden = !sharp.length;
      var st = clear($("#sharpness-table"));
      if (sharp.length) {
        st.appendChild(el("thead", null, el("tr", null, el("th", null, "Measure"), el("th", { class: "num" }, "Value"), el("th", null, "Parameters"))));
        var sb = el("tbody");
        sharp.forEach(function (s) {
          var params = Object.keys(s.params || {}).map(function (k) { return k + "=" + JSON.stringify(s.params[k]); }).join(", ");
          sb.appendChild(el("tr", null, el("td", { class: "mono" }, s.id), el("td", { class: "num" }, fmt(s.value)), el("td", { class: "mono" }, params)));
        });
        st.appendChild(sb);
      }

      var bounds = payload.bounds || [];
      $("#bounds-card").hidden = !bounds.length;
      var bt = clear($("#bounds-tables"));
      var testErr = ((run.report_head || {}).metrics || {}).test_error;
      if (typeof testErr !== "number") {
        var acc = ((run.report_head || {}).metrics || {}).test_accuracy;
        testErr = typeof acc === "number" ? 1 - acc : null;
      }
      if (bounds.length) bt.appendChild(el("p", { class: "muted small" }, "Measured test error: " + fmt(testErr) + ". A bound of 1 or more is vacuous; one not below the error of guessing among the classes is not informative."));
      bounds.forEach(function (b) {
        var badge =
          b.value === null || b.value === undefined
            ? el("span", { class: "badge badge-neutral" }, b.status === "ok" ? "no value" : "failed")
            : el(
                "span",
                {
                  class: "badge " + ({ vacuous: "badge-vacuous", "not informative": "badge-neutral" }[b.verdict] || "badge-ok"),
                  title: typeof b.informative_below === "number" ? "informative below " + fmt(b.informative_below) + " (the error of guessing among the classes)" : null,
                },
                b.verdict || (b.vacuous ? "vacuous" : "non-vacuous")
              );
        var summary = el(
          "summary",
          null,
          el("span", { class: "mono" }, b.id),
          " ",
          el("strong", null, fmt(b.value)),
          " ",
          badge,
          b.rigorous === false ? el("span", { class: "muted small" }, " constants not verified") : null,
          b.note ? el("div", { class: "muted small bound-note" }, b.note) : null
        );
        var t = el("table", { class: "data-table" });
        t.appendChild(el("thead", null, el("tr", null, el("th", null, "term"), el("th", { class: "num" }, "value"))));
        var body = el("tbody");
        (b.terms || []).forEach(function (term) {
          body.appendChild(el("tr", null, el("td", { class: "mono" }, term[0]), el("td", { class: "num" }, typeof term[1] === "number" ? fmt(term[1]) : String(term[1]))));
        });
        t.appendChild(body);
        var details = el("details", { class: "bound" }, summary, el("div", { class: "table-wrap" }, t));
        details.open = bounds.length <= 2;
        bt.appendChild(details);
      });
    }

    function poll() {
      var want = !drawn;
      api("/ui/runs/" + encodeURIComponent(runId) + (want ? "?figures=1" : ""))
        .then(function (data) {
          var run = data.run;
          header(run);
          progress(run);
          if (run.status === "failed") {
            showError($("#run-error"), run.error || { message: "the analysis failed" });
          }
          if (run.status === "succeeded" && data.payload) {
            drawn = true;
            $("#download-report").disabled = false;
            summary(run, data.payload);
            renderFigures($("#figures"), data.payload.figures || []);
            tables(data.payload, run);
            document.body.setAttribute("data-ready", "true");
            return;
          }
          if (isLive(run.status)) {
            delay = Math.min(3000, delay * 1.2);
            setTimeout(poll, delay);
          } else {
            document.body.setAttribute("data-ready", "true");
          }
        })
        .catch(function (err) {
          showError($("#run-error"), err);
          if (err.status === 0 || err.status >= 500) setTimeout(poll, 3000);
        });
    }

    $("#download-report").addEventListener("click", function () {
      api("/ui/runs/" + encodeURIComponent(runId) + "/report.json")
        .then(function (report) {
          downloadBlob("genscope-" + runId + ".report.json", JSON.stringify(report, null, 1), "application/json");
        })
        .catch(function (err) { showError($("#run-error"), err); });
    });
    poll();
  }

  document.addEventListener("DOMContentLoaded", initRun);
})(window.GenScope);
