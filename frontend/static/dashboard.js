/* GenScope dashboard, the runs page: the runs table (sort, filter, page, select two or more
 * runs and compare them) and the list of comparisons. The upload panel on the same page is
 * upload.js. Helpers come from the core (app.js, window.GenScope). */
(function (gs) {
  "use strict";

  var HEADLINE = gs.HEADLINE, $ = gs.$, el = gs.el, clear = gs.clear, fmt = gs.fmt, pct = gs.pct,
    fmtDate = gs.fmtDate, api = gs.api, setProgress = gs.setProgress, flash = gs.flash,
    statusBadge = gs.statusBadge, isLive = gs.isLive, rememberShareUrl = gs.rememberShareUrl;

  function initDashboard() {
    var state = { rows: [], count: 0, sort: "created_at", dir: -1, page: 0, perPage: 50, selected: {}, timer: null };
    var currentSlice = [];
    var table = $("#runs-table");
    var filter = $("#run-filter");
    var statusSel = $("#status-filter");

    function columns() {
      var cols = [
        { key: "_select", label: "", render: selectCell, sortable: false },
        { key: "name", label: "Name", render: nameCell },
        { key: "status", label: "Status", render: statusCell },
        { key: "model", label: "Model" },
        { key: "dataset", label: "Dataset" },
        { key: "train_accuracy", label: "Train acc", num: true, render: function (r) { return pct(r.train_accuracy); } },
        { key: "test_accuracy", label: "Test acc", num: true, render: function (r) { return pct(r.test_accuracy); } },
        { key: "generalization_gap", label: "Gap", num: true, render: function (r) { return pct(r.generalization_gap); } },
      ];
      HEADLINE.forEach(function (h) {
        cols.push({ key: "s:" + h[0], label: h[1], num: true });
      });
      var bounds = {};
      state.rows.forEach(function (r) {
        Object.keys(r.scalars || {}).forEach(function (k) {
          if (k.indexOf("bound.") === 0) bounds[k] = 1;
        });
      });
      Object.keys(bounds).sort().forEach(function (k) {
        cols.push({ key: "s:" + k, label: k.replace("bound.", "bound: ").replace(/_/g, "_\u200b"), num: true });
      });
      cols.push({ key: "created_at", label: "Created", render: function (r) { return fmtDate(r.created_at, true); } });
      return cols;
    }

    function value(r, key) {
      if (key.indexOf("s:") === 0) return (r.scalars || {})[key.slice(2)];
      return r[key];
    }

    function selectCell(r) {
      var box = el("input", { type: "checkbox", "aria-label": "Select run " + (r.name || r.id) });
      box.checked = !!state.selected[r.id];
      box.addEventListener("change", function () {
        if (box.checked) state.selected[r.id] = true;
        else delete state.selected[r.id];
        updateCompare();
        box.closest("tr").classList.toggle("selected", box.checked);
      });
      return box;
    }

    function nameCell(r) {
      return el("a", { href: "/runs/" + encodeURIComponent(r.id), title: r.id }, String(r.name || r.id));
    }

    function statusCell(r) {
      var wrap = el("div", null, statusBadge(r.status));
      if (isLive(r.status)) {
        var bar = el("div", { class: "progress-bar" });
        setProgress(bar, r.progress);
        wrap.appendChild(el("div", { class: "progress", title: Math.round((r.progress || 0) * 100) + "%" }, bar));
      }
      return wrap;
    }

    function visibleRows() {
      var q = filter.value.trim().toLowerCase();
      var st = statusSel.value;
      var rows = state.rows.filter(function (r) {
        if (st && r.status !== st) return false;
        if (!q) return true;
        return [r.name, r.id, r.model, r.dataset, r.status].join(" ").toLowerCase().indexOf(q) >= 0;
      });
      var key = state.sort;
      var dir = state.dir;
      rows.sort(function (a, b) {
        var va = value(a, key);
        var vb = value(b, key);
        var na = va === null || va === undefined;
        var nb = vb === null || vb === undefined;
        if (na && nb) return 0;
        if (na) return 1; // missing values last, whatever the direction
        if (nb) return -1;
        if (typeof va === "number" && typeof vb === "number") return dir * (va - vb);
        return dir * String(va).localeCompare(String(vb));
      });
      return rows;
    }

    function render() {
      var cols = columns();
      var headRow = clear($("thead tr", table));
      cols.forEach(function (c) {
        var th = el("th", { scope: "col", class: (c.num ? "num " : "") + (c.sortable === false ? "" : "sortable") });
        if (c.key === "_select") {
          var all = el("input", { type: "checkbox", "aria-label": "Select every run on this page", id: "select-page" });
          all.addEventListener("change", function () {
            currentSlice.forEach(function (r) {
              if (all.checked) state.selected[r.id] = true;
              else delete state.selected[r.id];
            });
            render();
          });
          th.appendChild(all);
        } else {
          th.textContent = c.label;
          th.tabIndex = 0;
          th.setAttribute("aria-sort", state.sort === c.key ? (state.dir > 0 ? "ascending" : "descending") : "none");
          var sortBy = function () {
            if (state.sort === c.key) state.dir = -state.dir;
            else {
              state.sort = c.key;
              state.dir = c.num ? -1 : 1;
            }
            render();
          };
          th.addEventListener("click", sortBy);
          th.addEventListener("keydown", function (e) {
            if (e.key === "Enter" || e.key === " ") {
              e.preventDefault();
              sortBy();
            }
          });
        }
        headRow.appendChild(th);
      });
      var rows = visibleRows();
      var pages = Math.max(1, Math.ceil(rows.length / state.perPage));
      state.page = Math.min(state.page, pages - 1);
      var slice = rows.slice(state.page * state.perPage, (state.page + 1) * state.perPage);
      currentSlice = slice;
      var pageBox = $("#select-page");
      if (pageBox) {
        var n = slice.filter(function (r) { return state.selected[r.id]; }).length;
        pageBox.checked = n > 0 && n === slice.length;
        pageBox.indeterminate = n > 0 && n < slice.length;
      }
      var body = clear($("tbody", table));
      if (!slice.length) {
        var msg = state.rows.length ? "No run matches the filter." : "No runs yet. Upload a checkpoint below to start an analysis.";
        body.appendChild(el("tr", null, el("td", { colspan: String(cols.length), class: "muted" }, msg)));
      }
      slice.forEach(function (r) {
        var tr = el("tr", { "data-run-id": r.id, class: state.selected[r.id] ? "selected" : "" });
        cols.forEach(function (c) {
          var v = c.render ? c.render(r) : c.num ? fmt(value(r, c.key)) : value(r, c.key);
          var td = el("td", { class: (c.num ? "num" : "") + (c.key === "name" ? " name" : "") });
          if (v instanceof Node) td.appendChild(v);
          else td.textContent = v === null || v === undefined ? "—" : String(v);
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
      $("#page-info").textContent = "Page " + (state.page + 1) + " of " + pages;
      $("#page-prev").disabled = state.page === 0;
      $("#page-next").disabled = state.page >= pages - 1;
      var more = state.count > state.rows.length ? " (newest " + state.rows.length + " of " + state.count + " loaded)" : "";
      $("#runs-summary").textContent = rows.length + " of " + state.rows.length + " runs" + more;
      updateCompare();
    }

    function updateCompare() {
      var n = Object.keys(state.selected).length;
      var btn = $("#compare-btn");
      btn.disabled = n < 2 || n > 20;
      $("#compare-count").textContent = n ? "(" + n + ")" : "";
      btn.title = n < 2 ? "Select 2 to 20 runs" : n > 20 ? "At most 20 runs" : "";
    }

    function load() {
      return api("/ui/runs?limit=500")
        .then(function (data) {
          state.rows = data.data || [];
          state.count = data.count || state.rows.length;
          render();
          var live = state.rows.some(function (r) { return isLive(r.status); });
          clearTimeout(state.timer);
          if (live) state.timer = setTimeout(load, 2500);
        })
        .catch(function (err) {
          var body = clear($("tbody", table));
          body.appendChild(el("tr", null, el("td", { class: "error-box" }, "Could not load the runs: " + err.message)));
        });
    }

    filter.addEventListener("input", function () { state.page = 0; render(); });
    statusSel.addEventListener("change", function () { state.page = 0; render(); });
    $("#page-prev").addEventListener("click", function () { state.page--; render(); });
    $("#page-next").addEventListener("click", function () { state.page++; render(); });
    $("#compare-btn").addEventListener("click", function () {
      var ids = state.rows.filter(function (r) { return state.selected[r.id]; }).map(function (r) { return r.id; });
      var btn = this;
      btn.disabled = true;
      api("/api/comparisons", { method: "POST", body: { run_ids: ids } })
        .then(function (c) {
          if (c.share_url) rememberShareUrl(c.id, c.share_url);
          window.location.href = "/compare/" + encodeURIComponent(c.id);
        })
        .catch(function (err) {
          btn.disabled = false;
          flash("Could not create the comparison: " + err.message);
        });
    });
    load();
    loadComparisons();
  }

  function loadComparisons() {
    var list = $("#comparisons-list");
    if (!list) return;
    api("/api/comparisons?limit=20")
      .then(function (data) {
        var items = data.data || [];
        $("#comparisons-card").hidden = !items.length;
        clear(list);
        items.forEach(function (c) {
          var title = c.title || "Comparison of " + (c.run_ids || []).length + " runs";
          list.appendChild(
            el(
              "li",
              null,
              el("a", { href: "/compare/" + encodeURIComponent(c.id) }, title),
              el("span", { class: "muted small" }, " · " + (c.run_ids || []).length + " runs · " + fmtDate(c.created_at, true)),
              c.shared ? el("span", { class: "badge badge-neutral" }, "shared") : null
            )
          );
        });
      })
      .catch(function () {
        /* the list is a convenience: leave it hidden */
      });
  }

  document.addEventListener("DOMContentLoaded", initDashboard);
})(window.GenScope);
