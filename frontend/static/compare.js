/* GenScope dashboard, a comparison's page: the owner's (/compare/..., with share, revoke and
 * interpolation controls) and the read-only shared one (/share/..., its data embedded in the
 * page). Figures, the scalars side by side and the rank correlations with the gap.
 * Helpers come from the core (app.js, window.GenScope). */
(function (gs) {
  "use strict";

  var $ = gs.$, el = gs.el, clear = gs.clear, fmt = gs.fmt, fmtDate = gs.fmtDate, api = gs.api,
    showError = gs.showError, flash = gs.flash, statusBadge = gs.statusBadge, isLive = gs.isLive,
    renderFigures = gs.renderFigures, rememberShareUrl = gs.rememberShareUrl,
    knownShareUrl = gs.knownShareUrl, forgetShareUrl = gs.forgetShareUrl;

  function initCompare() {
    var root = $("#compare-root");
    var readonly = root.getAttribute("data-readonly") === "true";
    var cid = root.getAttribute("data-comparison-id");
    var embedded = $("#embedded-data");
    var baseline = 0;
    function refresh() {
      var load = embedded ? Promise.resolve(JSON.parse(embedded.textContent)) : api(root.getAttribute("data-src"));
      return load
        .then(function (data) {
          draw(data);
          document.body.setAttribute("data-ready", "true");
          // runs still analysing: redraw as they finish (Plotly.react keeps zoom and legend state)
          var live = (data.runs || []).some(function (r) { return isLive(r.status); });
          if (live && !embedded) setTimeout(refresh, 3000);
        })
        .catch(function (err) { showError($("#compare-error"), err); });
    }
    refresh();

    function draw(data) {
      var runs = data.runs || [];
      var title = (data.comparison && data.comparison.title) || "Comparison of " + runs.length + " runs";
      $("#compare-title").textContent = title;
      document.title = title + " · GenScope";
      var meta = [runs.length + " runs"];
      if (data.omitted) meta.push(data.omitted + " more not shown (at most " + runs.length + " per comparison)");
      if (data.comparison && data.comparison.created_at) meta.push("created " + fmtDate(data.comparison.created_at));
      $("#compare-meta").textContent = meta.join(" · ");
      var legend = clear($("#run-legend"));
      runs.forEach(function (r) {
        var label = readonly || !r.id ? el("span", null, r.name) : el("a", { href: "/runs/" + encodeURIComponent(r.id) }, r.name);
        var extra = [r.model, r.dataset].filter(Boolean).join(" · ");
        var pending = r.status && r.status !== "succeeded" ? statusBadge(r.status) : null;
        legend.appendChild(el("li", null, el("span", { class: "swatch", style: "background:" + r.color, "aria-hidden": "true" }), label, extra ? el("span", { class: "muted small" }, extra) : null, pending));
      });
      renderFigures($("#figures"), data.figures || []);
      baseline = Math.min(baseline, Math.max(0, runs.length - 1));
      scalarTable(data, baseline);
      var sel = clear($("#baseline-select"));
      runs.forEach(function (r, i) {
        sel.appendChild(el("option", { value: String(i) }, r.name));
      });
      sel.value = String(baseline);
      sel.onchange = function () {
        baseline = Number(sel.value);
        scalarTable(data, baseline);
      };
      corrTable(data);
      if (!readonly) {
        shareControls(data);
        interpolationControls(runs);
      }
    }

    /** "Loss between two runs": a landscape.interpolate run from one checkpoint to another. */
    function interpolationControls(runs) {
      var card = $("#interp-card");
      var usable = runs.filter(function (r) { return r.checkpoint_id; });
      if (!card || usable.length < 2) return;
      card.hidden = false;
      var a = $("#interp-a"), b = $("#interp-b");
      if (!a.options.length) {
        usable.forEach(function (r, i) {
          a.appendChild(el("option", { value: String(i) }, r.name));
          b.appendChild(el("option", { value: String(i) }, r.name));
        });
        b.value = "1";
      }
      $("#interp-btn").onclick = function () {
        var from = usable[Number(a.value)], to = usable[Number(b.value)];
        var status = $("#interp-status");
        if (from === to) {
          status.textContent = "choose two different runs";
          return;
        }
        var body = {
          checkpoint_id: from.checkpoint_id,
          dataset: from.dataset_spec || "digits",
          measures: ["landscape.interpolate"],
          params: { "landscape.interpolate": { other: to.checkpoint_id } }
        };
        status.textContent = "submitting ...";
        api("/api/runs", { method: "POST", body: body })
          .then(function (run) {
            clear(status).appendChild(el("a", { href: "/runs/" + encodeURIComponent(run.id) }, "interpolation run " + run.id.slice(0, 8) + " (" + run.status + ")"));
          })
          .catch(function (err) { showError(status, err); });
      };
    }

    function scalarTable(data, base) {
      var runs = data.runs || [];
      var t = clear($("#scalar-table"));
      var hr = el("tr", null, el("th", { scope: "col" }, "Measure"), el("th", { scope: "col" }, "Better"));
      runs.forEach(function (r, i) {
        hr.appendChild(
          el(
            "th",
            { scope: "col", class: "num", title: r.name },
            el("span", { class: "swatch", style: "background:" + r.color, "aria-hidden": "true" }),
            " ",
            el("span", { class: "run-name" }, r.name),
            i === base ? el("span", { class: "delta" }, "baseline") : null
          )
        );
      });
      t.appendChild(el("thead", null, hr));
      var body = el("tbody");
      (data.table || []).forEach(function (row) {
        // a bound row whose best value is vacuous marks no best: its note says why
        var label = el("td", { class: "mono" }, row.label, row.note ? el("span", { class: "muted small row-note" }, " (" + row.note + ")") : null);
        var tr = el("tr", null, label, el("td", null, row.direction === "higher_is_better" ? "↑" : row.direction === "lower_is_better" ? "↓" : ""));
        var bv = row.values[base];
        row.values.forEach(function (v, i) {
          var isBest = (row.best || []).indexOf(i) >= 0;
          var vac = row.vacuous && row.vacuous[i];
          var td = el("td", { class: "num" + (isBest ? " best" : "") + (vac ? " vacuous" : ""), title: isBest ? "best" : vac ? "vacuous: a bound ≥ 1 says nothing" : null }, fmt(v));
          if (i !== base && typeof v === "number" && typeof bv === "number") {
            var d = v - bv;
            var cls = "delta";
            if (d !== 0 && row.direction) cls += (row.direction === "higher_is_better") === d > 0 ? " better" : " worse";
            td.appendChild(el("span", { class: cls }, (d > 0 ? "+" : d < 0 ? "−" : "±") + fmt(Math.abs(d))));
          }
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
      t.appendChild(body);
    }

    /** Each measure's Kendall τ-a with the gap, its bootstrap interval, the runs used and the
     * notes on what these runs cannot tell (too few, different architectures or data). */
    function corrTable(data) {
      var rows = data.correlations || [];
      var card = $("#corr-card");
      card.hidden = !rows.length;
      if (!rows.length) return;
      var t = clear($("#corr-table"));
      t.appendChild(el("thead", null, el("tr", null, el("th", null, "Measure"), el("th", null, "Better"), el("th", { class: "num" }, "τ-a with the gap [95% bootstrap]"), el("th", { class: "num" }, "runs"), el("th", null, "Agrees with its direction?"), el("th", null, "Notes"))));
      var body = el("tbody");
      rows
        .slice()
        .sort(function (a, b) { return Math.abs(b.tau || 0) - Math.abs(a.tau || 0); })
        .forEach(function (r) {
          var agrees = "";
          if (typeof r.tau === "number" && r.direction && r.tau !== 0) {
            agrees = (r.direction === "lower_is_better") === r.tau > 0 ? "yes" : "no";
          }
          var tau = r.label || (typeof r.tau === "number" ? "τ = " + r.tau.toFixed(2) : "—");
          var notes = (r.notes || []).join("; ");
          body.appendChild(el("tr", null, el("td", { class: "mono" }, r.key), el("td", null, r.direction === "higher_is_better" ? "↑" : r.direction === "lower_is_better" ? "↓" : ""), el("td", { class: "num" }, tau), el("td", { class: "num" }, String(r.n)), el("td", null, agrees), el("td", { class: notes ? "warn small" : "small" }, notes)));
        });
      t.appendChild(body);
    }

    function shareControls(data) {
      var shareBtn = $("#share-btn");
      var revokeBtn = $("#revoke-btn");
      var box = $("#share-box");
      var known = knownShareUrl(cid);
      revokeBtn.hidden = !(data.comparison && data.comparison.shared);
      function showUrl(url) {
        box.hidden = false;
        $("#share-url").value = url;
        revokeBtn.hidden = false;
      }
      shareBtn.onclick = function () {
        if (known) {
          showUrl(known);
          return;
        }
        shareBtn.disabled = true;
        var hours = $("#share-expiry") ? $("#share-expiry").value : "";
        var body = hours ? { expires_in_hours: Number(hours) } : {};
        api("/api/comparisons/" + encodeURIComponent(cid) + "/share", { method: "POST", body: body })
          .then(function (c) {
            known = c.share_url;
            rememberShareUrl(cid, known);
            showUrl(known);
          })
          .catch(function (err) { showError($("#compare-error"), err); })
          .then(function () { shareBtn.disabled = false; });
      };
      revokeBtn.onclick = function () {
        api("/api/comparisons/" + encodeURIComponent(cid) + "/share", { method: "DELETE" })
          .then(function (r) {
            known = null;
            forgetShareUrl(cid);
            box.hidden = true;
            revokeBtn.hidden = true;
            flash("Share links revoked (" + r.revoked + "). They stop working at once.");
          })
          .catch(function (err) { showError($("#compare-error"), err); });
      };
      $("#share-copy").onclick = function () {
        var input = $("#share-url");
        input.select();
        if (navigator.clipboard) navigator.clipboard.writeText(input.value).catch(function () {});
      };
    }
  }

  document.addEventListener("DOMContentLoaded", initCompare);
})(window.GenScope);
