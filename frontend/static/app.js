/* GenScope dashboard: small vanilla JS, no build step.
 * Figures come ready-made from the server (plotly JSON built in frontend/figures.py); this file
 * fetches data, fills tables and calls Plotly.react. User text always goes in via textContent. */
(function () {
  "use strict";

  var TOKEN_KEY = "genscope.token";
  var SECTION_TITLES = {
    margins: "Margins",
    curvature: "Curvature",
    sharpness: "Sharpness",
    landscape: "Loss landscape",
    bounds: "Bounds",
    study: "Measures vs generalization",
  };
  var WIDE = { margin_distribution: 1, gap_scatter: 1 };
  var EXPORT_HINTS = {
    unsafe_checkpoint:
      "Export the model instead: torch.export.save(torch.export.export(model, (x,)), 'model.pt2'), " +
      "or save model.state_dict() with safetensors and pick its architecture here.",
    weight_mismatch: "Check the architecture and its settings: they must match the saved weights.",
    payload_too_large: "The file is larger than this server accepts (GENSCOPE_MAX_UPLOAD_MB).",
  };

  // ------------------------------------------------------------------ helpers

  function $(sel, root) {
    return (root || document).querySelector(sel);
  }

  /** Create an element; string children become text nodes (never HTML). */
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = v;
        else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), v);
        else if (k === "style") node.setAttribute("style", v);
        else node.setAttribute(k, v === true ? "" : v);
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function fmt(v) {
    if (v === null || v === undefined || typeof v !== "number" || !isFinite(v)) return "—";
    var a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e5 || a < 1e-3) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }

  function pct(v) {
    return typeof v === "number" && isFinite(v) ? (100 * v).toFixed(1) + "%" : "—";
  }

  function fmtDate(s, short) {
    if (!s) return "";
    var d = new Date(s);
    if (isNaN(d.getTime())) return String(s);
    return short ? d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" }) : d.toLocaleString();
  }

  function authHeaders() {
    var t = null;
    try {
      t = window.localStorage.getItem(TOKEN_KEY);
    } catch (e) {
      t = null;
    }
    var headers = t ? { Authorization: "Bearer " + t } : {};
    // the page's CSRF token: a change sent by a browser must carry it (auth off)
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta && meta.content) headers["X-CSRF-Token"] = meta.content;
    return headers;
  }

  function ApiError(status, body) {
    this.status = status;
    this.code = (body && body.code) || "http_" + status;
    this.message = (body && (body.message || body.detail)) || "request failed (" + status + ")";
    if (typeof this.message !== "string") this.message = JSON.stringify(this.message);
    this.detail = body && body.detail;
  }

  function parseBody(text) {
    try {
      return text ? JSON.parse(text) : null;
    } catch (e) {
      return { message: text.slice(0, 300) };
    }
  }

  /** fetch JSON with the saved token; throws ApiError on non-2xx. */
  function api(path, opts) {
    opts = opts || {};
    var headers = Object.assign({ Accept: "application/json" }, authHeaders());
    var body = opts.body;
    if (body && !(body instanceof FormData) && typeof body !== "string") {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(body);
    }
    return fetch(path, { method: opts.method || "GET", headers: headers, body: body, credentials: "same-origin" })
      .then(function (res) {
        return res.text().then(function (text) {
          var data = parseBody(text);
          if (!res.ok) {
            if (res.status === 401) showAuthBox();
            throw new ApiError(res.status, data);
          }
          return data;
        });
      });
  }

  /** multipart upload with progress (fetch has no upload progress). */
  function upload(path, form, bar) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      var h = authHeaders();
      Object.keys(h).forEach(function (k) {
        xhr.setRequestHeader(k, h[k]);
      });
      xhr.setRequestHeader("Accept", "application/json");
      if (bar) {
        bar.parentNode.hidden = false;
        setProgress(bar, 0);
        xhr.upload.onprogress = function (e) {
          if (e.lengthComputable) setProgress(bar, e.loaded / e.total);
        };
      }
      xhr.onload = function () {
        var data = parseBody(xhr.responseText);
        if (xhr.status >= 200 && xhr.status < 300) {
          if (bar) setProgress(bar, 1);
          resolve(data);
        } else {
          if (xhr.status === 401) showAuthBox();
          reject(new ApiError(xhr.status, data));
        }
      };
      xhr.onerror = function () {
        reject(new ApiError(0, { message: "the upload was interrupted (network error)" }));
      };
      xhr.send(form);
    });
  }

  function setProgress(bar, frac) {
    var p = Math.max(0, Math.min(1, frac || 0)) * 100;
    bar.style.width = p.toFixed(1) + "%";
    bar.setAttribute("aria-valuenow", String(Math.round(p)));
  }

  function showError(box, err) {
    if (!box) return;
    clear(box);
    box.hidden = false;
    box.appendChild(el("strong", null, err.message || String(err)));
    var detail = err.detail;
    if (detail && typeof detail === "object") {
      var lines = [];
      Object.keys(detail).forEach(function (k) {
        var v = detail[k];
        lines.push(k + ": " + (typeof v === "string" ? v : JSON.stringify(v)));
      });
      if (lines.length) box.appendChild(el("div", { class: "small" }, lines.join("\n")));
    } else if (typeof detail === "string" && detail) {
      box.appendChild(el("div", { class: "small" }, detail));
    }
    var hint = err.code && EXPORT_HINTS[err.code];
    if (hint && String(err.message).indexOf("export") < 0) box.appendChild(el("div", { class: "hint" }, hint));
  }

  function hideError(box) {
    if (box) {
      box.hidden = true;
      clear(box);
    }
  }

  function showAuthBox() {
    var box = $("#auth-box");
    if (box) box.hidden = false;
  }

  function initAuth() {
    var form = $("#auth-box");
    if (!form) return;
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var v = $("#auth-token").value.trim();
      try {
        if (v) window.localStorage.setItem(TOKEN_KEY, v);
        else window.localStorage.removeItem(TOKEN_KEY);
      } catch (e) {
        /* storage unavailable */
      }
      window.location.reload();
    });
  }

  function statusBadge(status) {
    return el("span", { class: "badge badge-" + (status || "neutral") }, status || "unknown");
  }

  function downloadBlob(name, text, type) {
    var url = URL.createObjectURL(new Blob([text], { type: type }));
    var a = el("a", { href: url, download: name });
    document.body.appendChild(a);
    a.click();
    setTimeout(function () {
      URL.revokeObjectURL(url);
      a.remove();
    }, 1000);
  }

  // ------------------------------------------------------------------ figures

  function decodeArray(v) {
    if (v && typeof v === "object" && v.bdata) {
      var bin = atob(v.bdata);
      var bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      var types = { f8: Float64Array, f4: Float32Array, i4: Int32Array, u4: Uint32Array, i2: Int16Array, u2: Uint16Array, i1: Int8Array, u1: Uint8Array };
      var T = types[v.dtype] || Float64Array;
      return Array.from(new T(bytes.buffer));
    }
    return Array.isArray(v) ? v : v === undefined ? [] : [v];
  }

  function figureData(spec) {
    return (spec.figure.data || []).map(function (t) {
      var out = { name: t.name || t.type, type: t.type, x: decodeArray(t.x), y: decodeArray(t.y) };
      if (t.z !== undefined) out.z = t.z;
      return out;
    });
  }

  function figureCsv(spec) {
    var rows = ["trace,x,y"];
    figureData(spec).forEach(function (t) {
      var n = Math.max(t.x.length, t.y.length);
      var name = '"' + String(t.name).replace(/"/g, '""') + '"';
      for (var i = 0; i < n; i++) {
        rows.push(name + "," + (t.x[i] === undefined || t.x[i] === null ? "" : t.x[i]) + "," + (t.y[i] === undefined || t.y[i] === null ? "" : t.y[i]));
      }
    });
    return rows.join("\n");
  }

  function plotConfig(spec) {
    var cfg = {
      responsive: true,
      displaylogo: false,
      modeBarButtonsToRemove: ["select2d", "lasso2d"],
      toImageButtonOptions: { format: "png", filename: "genscope-" + spec.id, scale: 2 },
    };
    if (window.Plotly && Plotly.Icons) {
      cfg.modeBarButtonsToAdd = [
        {
          name: "Download plot as SVG",
          icon: Plotly.Icons.disk,
          click: function (gd) {
            Plotly.downloadImage(gd, { format: "svg", filename: "genscope-" + spec.id });
          },
        },
      ];
    }
    return cfg;
  }

  /** Draw (or update, keeping zoom: fixed uirevision) every figure of a payload. */
  function renderFigures(root, specs) {
    if (!window.Plotly) {
      root.appendChild(el("div", { class: "error-box" }, "plotly.js did not load: figures cannot be drawn."));
      return;
    }
    var sections = {};
    specs.forEach(function (spec) {
      var sec = sections[spec.section];
      if (!sec) {
        sec = $("#section-" + spec.section, root);
        if (!sec) {
          var wrap = el("section", { id: "section-" + spec.section, "aria-label": SECTION_TITLES[spec.section] || spec.section });
          wrap.appendChild(el("h2", { class: "section-title" }, SECTION_TITLES[spec.section] || spec.section));
          wrap.appendChild(el("div", { class: "figure-grid" }));
          root.appendChild(wrap);
          sec = wrap;
        }
        sections[spec.section] = sec;
      }
      var card = $("#card-" + spec.id, sec);
      var plot;
      if (!card) {
        plot = el("div", { class: "plot", id: "fig-" + spec.id, role: "figure", "aria-label": spec.title });
        var links = el("span", { class: "downloads" });
        [
          ["PNG", function () { Plotly.downloadImage(plot, { format: "png", filename: "genscope-" + spec.id, scale: 2 }); }],
          ["SVG", function () { Plotly.downloadImage(plot, { format: "svg", filename: "genscope-" + spec.id }); }],
          ["CSV", function () { downloadBlob("genscope-" + spec.id + ".csv", figureCsv(card._spec), "text/csv"); }],
          ["JSON", function () { downloadBlob("genscope-" + spec.id + ".json", JSON.stringify(figureData(card._spec)), "application/json"); }],
        ].forEach(function (d) {
          links.appendChild(el("a", { href: "#", role: "button", "aria-label": "Download " + spec.title + " as " + d[0], onclick: function (e) { e.preventDefault(); d[1](); } }, d[0]));
        });
        card = el(
          "div",
          { class: "figure-card" + (WIDE[spec.id] ? " wide" : ""), id: "card-" + spec.id },
          el("h3", { class: "visually-hidden" }, spec.title),
          plot,
          el("div", { class: "figure-foot" }, el("span", null, spec.description || ""), links)
        );
        $(".figure-grid", sec).appendChild(card);
      } else {
        plot = $(".plot", card);
      }
      card._spec = spec;
      Plotly.react(plot, spec.figure.data, spec.figure.layout, plotConfig(spec));
    });
  }

  // ------------------------------------------------------------------ dashboard

  var HEADLINE = [
    ["margin.all_layer", "Median all-layer margin"],
    ["hessian.top_eigenvalues", "λ_max"],
    ["hessian.trace", "Hessian trace"],
    ["sharpness.adaptive_worst", "Adaptive sharpness"],
  ];

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
      if (r.status === "running" || r.status === "queued") {
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
          var live = state.rows.some(function (r) { return r.status === "queued" || r.status === "running"; });
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
          try {
            if (c.share_url) window.sessionStorage.setItem("genscope.share." + c.id, c.share_url);
          } catch (e) {
            /* ignore */
          }
          window.location.href = "/compare/" + encodeURIComponent(c.id);
        })
        .catch(function (err) {
          btn.disabled = false;
          flash("Could not create the comparison: " + err.message);
        });
    });
    load();
    loadComparisons();
    initUpload();
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

  function flash(text) {
    var f = $("#flash");
    if (!f) return;
    f.textContent = text;
    f.hidden = false;
  }

  // ------------------------------------------------------------------ upload

  var COST_RANK = { cheap: 0, moderate: 1, expensive: 2 };

  function initUpload() {
    var form = $("#upload-form");
    if (!form) return;
    var fileInput = $("#file-input");
    var drop = $("#dropzone");
    var errBox = $("#upload-error");
    var chosen = null;
    var archs = {};

    function choose(file) {
      chosen = file || null;
      $("#file-name").textContent = chosen ? chosen.name + " (" + (chosen.size / 1048576).toFixed(2) + " MB)" : "";
      hideError(errBox);
    }
    drop.addEventListener("click", function () { fileInput.click(); });
    drop.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        fileInput.click();
      }
    });
    fileInput.addEventListener("change", function () { choose(fileInput.files[0]); });
    ["dragenter", "dragover"].forEach(function (t) {
      drop.addEventListener(t, function (e) {
        e.preventDefault();
        drop.classList.add("dragover");
      });
    });
    ["dragleave", "drop"].forEach(function (t) {
      drop.addEventListener(t, function (e) {
        e.preventDefault();
        drop.classList.remove("dragover");
      });
    });
    drop.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) choose(e.dataTransfer.files[0]);
    });

    // architectures (the zoo's catalogue, when the service offers it)
    var archSel = $("#arch-select");
    api("/ui/architectures")
      .then(function (data) {
        var list = Array.isArray(data) ? data : data.data || [];
        if (!list.length) throw new Error("no catalogue");
        list.forEach(function (a) {
          archs[a.name] = a;
          archSel.appendChild(el("option", { value: a.name }, a.name));
        });
      })
      .catch(function () {
        // no catalogue route: a free-text architecture name and a JSON config
        var input = el("input", { type: "text", id: "arch-select", placeholder: "zoo architecture name, e.g. mlp", "aria-label": "Architecture" });
        archSel.replaceWith(input);
        archSel = input;
        var fields = $("#arch-fields");
        fields.appendChild(el("label", { for: "arch-config" }, "Architecture config (JSON)"));
        fields.appendChild(el("textarea", { id: "arch-config", rows: "2", placeholder: '{"hidden": [32]}' }));
      });
    archSel.addEventListener("change", function () {
      var a = archs[archSel.value];
      $("#arch-desc").textContent = a ? a.description || "" : "";
      var box = clear($("#arch-fields"));
      if (!a) return;
      (a.fields || []).forEach(function (f) {
        var id = "arch-field-" + f.name;
        var input;
        if (f.choices) {
          input = el("select", { id: id, "data-field": f.name, "data-type": f.type });
          f.choices.forEach(function (c) {
            input.appendChild(el("option", { value: String(c) }, String(c)));
          });
          if (f.default !== null && f.default !== undefined) input.value = String(f.default);
        } else if (f.type === "bool") {
          input = el("select", { id: id, "data-field": f.name, "data-type": "bool" }, el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
          input.value = String(!!f.default);
        } else {
          input = el("input", {
            id: id,
            type: f.type === "int" || f.type === "float" ? "number" : "text",
            step: f.type === "float" ? "any" : null,
            "data-field": f.name,
            "data-type": f.type,
            placeholder: f.default === null || f.default === undefined ? "auto" : typeof f.default === "object" ? JSON.stringify(f.default) : String(f.default),
          });
        }
        box.appendChild(el("div", { class: "field" }, el("label", { for: id, title: f.help || "" }, f.name), input));
      });
    });

    function archConfig() {
      var raw = $("#arch-config");
      if (raw) return raw.value.trim() || null;
      var cfg = {};
      var any = false;
      document.querySelectorAll("#arch-fields [data-field]").forEach(function (input) {
        var v = input.value.trim();
        if (v === "") return;
        var t = input.getAttribute("data-type");
        if (t === "int" || t === "float") v = Number(v);
        else if (t === "bool") v = v === "true";
        else if (v[0] === "[" || v[0] === "{") {
          try {
            v = JSON.parse(v);
          } catch (e) {
            /* keep the text */
          }
        }
        cfg[input.getAttribute("data-field")] = v;
        any = true;
      });
      return any ? JSON.stringify(cfg) : null;
    }

    // datasets
    var dsSel = $("#dataset-select");
    api("/api/datasets")
      .then(function (data) {
        var list = Array.isArray(data) ? data : data.data || [];
        if (!list.length) return;
        clear(dsSel);
        list.forEach(function (d) {
          var value = d.spec || d.id || d.name;
          var label = d.name || value;
          if (d.n_train) label += " (" + d.n_train + " train" + (d.num_classes ? ", " + d.num_classes + " classes" : "") + ")";
          dsSel.appendChild(el("option", { value: value, title: d.description || "" }, label));
        });
        dsSel.value = "digits";
        if (!dsSel.value && dsSel.options.length) dsSel.selectedIndex = 0;
      })
      .catch(function () {
        /* keep the built-in default */
      });
    $("#dataset-file").addEventListener("change", function () {
      var f = this.files[0];
      if (!f) return;
      var fd = new FormData();
      fd.append("file", f, f.name);
      hideError(errBox);
      upload("/api/datasets", fd, $("#dataset-progress .progress-bar"))
        .then(function (d) {
          var opt = el("option", { value: d.id }, (d.name || f.name) + " (" + d.n_train + " train)");
          dsSel.appendChild(opt);
          dsSel.value = d.id;
        })
        .catch(function (err) { showError(errBox, err); });
    });

    // measure groups with their cost
    api("/api/measures")
      .then(function (data) {
        var list = data.data || [];
        var groups = {};
        list.forEach(function (m) {
          var g = (groups[m.group] = groups[m.group] || { n: 0, costs: {}, items: [] });
          g.n++;
          g.items.push(m);
          var c = COST_RANK[m.cost] === undefined ? "cheap" : m.cost;
          g.costs[c] = (g.costs[c] || 0) + 1;
        });
        var box = clear($("#measure-groups"));
        var names = (data.groups || Object.keys(groups)).filter(function (g) { return groups[g]; });
        names.forEach(function (g) {
          var info = groups[g];
          var id = "group-" + g;
          var cb = el("input", { type: "checkbox", id: id, value: g, "data-group": g });
          cb.checked = g === "margins" || g === "metrics";
          var costText = ["cheap", "moderate", "expensive"]
            .filter(function (c) { return info.costs[c]; })
            .map(function (c) { return info.costs[c] + " " + c; })
            .join(" · ");
          var items = el("div", { class: "measure-items" });
          info.items.forEach(function (m) {
            var mid = "measure-" + m.id.replace(/[^a-zA-Z0-9_-]/g, "-");
            var mcb = el("input", { type: "checkbox", id: mid, value: m.id, "data-member": g });
            mcb.checked = cb.checked;
            mcb.addEventListener("change", function () {
              var all = items.querySelectorAll("input");
              var on = items.querySelectorAll("input:checked").length;
              cb.checked = on === all.length;
              cb.indeterminate = on > 0 && on < all.length;
            });
            items.appendChild(
              el("label", { for: mid, title: m.description || "" }, mcb, el("span", { class: "mono" }, m.id), el("span", { class: "cost" }, m.cost || ""))
            );
          });
          cb.addEventListener("change", function () {
            cb.indeterminate = false;
            items.querySelectorAll("input").forEach(function (x) { x.checked = cb.checked; });
          });
          box.appendChild(
            el(
              "div",
              { class: "measure-group" },
              el("label", { for: id }, cb, el("span", null, g + " (" + info.n + " measures)"), el("span", { class: "cost" }, costText)),
              el("details", null, el("summary", { class: "small muted" }, "choose measures"), items)
            )
          );
        });
        if (!names.length) box.appendChild(el("span", { class: "muted" }, "No measures available."));
      })
      .catch(function (err) {
        var box = clear($("#measure-groups"));
        box.appendChild(el("span", { class: "muted" }, "Measure catalogue unavailable (" + err.message + "); the default measures will run."));
      });

    /** Whole groups by name, otherwise the measures ticked one by one. */
    function selectedMeasures() {
      var out = [];
      document.querySelectorAll("#measure-groups input[data-group]").forEach(function (g) {
        var name = g.getAttribute("data-group");
        if (g.checked) out.push(name);
        else {
          document.querySelectorAll('#measure-groups input[data-member="' + name + '"]:checked').forEach(function (m) {
            out.push(m.value);
          });
        }
      });
      return out;
    }

    form.addEventListener("submit", function (e) {
      e.preventDefault();
      hideError(errBox);
      if (!chosen) {
        showError(errBox, { message: "Choose a checkpoint file first (drop it on the box or click it)." });
        return;
      }
      var submit = $("#upload-submit");
      submit.disabled = true;
      var status = $("#upload-status");
      status.textContent = "Uploading…";
      var fd = new FormData();
      fd.append("file", chosen, chosen.name);
      var name = $("#run-name").value.trim();
      if (name) fd.append("name", name);
      var arch = archSel.value ? archSel.value.trim() : "";
      if (arch) fd.append("arch", arch);
      var cfg = archConfig();
      if (cfg && arch) fd.append("arch_config", cfg);
      var measures = selectedMeasures();
      upload("/api/checkpoints", fd, $("#upload-progress .progress-bar"))
        .then(function (ckpt) {
          status.textContent = "Uploaded (" + (ckpt.format || "checkpoint") + "). Starting the analysis…";
          var body = { checkpoint_id: ckpt.id, dataset: dsSel.value || "digits" };
          if (measures.length) body.measures = measures;
          return api("/api/runs", { method: "POST", body: body });
        })
        .then(function (run) {
          window.location.href = "/runs/" + encodeURIComponent(run.id);
        })
        .catch(function (err) {
          status.textContent = "";
          submit.disabled = false;
          showError(errBox, err);
        });
    });
    if (window.location.hash === "#upload") $("#upload").scrollIntoView();
  }

  // ------------------------------------------------------------------ run page

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
      var live = run.status === "queued" || run.status === "running";
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
          if (run.status === "queued" || run.status === "running") {
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

  // ------------------------------------------------------------------ compare and share pages

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
          var live = (data.runs || []).some(function (r) { return r.status === "queued" || r.status === "running"; });
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
        var tr = el("tr", null, el("td", { class: "mono" }, row.label), el("td", null, row.direction === "higher_is_better" ? "↑" : row.direction === "lower_is_better" ? "↓" : ""));
        var bv = row.values[base];
        row.values.forEach(function (v, i) {
          var isBest = (row.best || []).indexOf(i) >= 0;
          var td = el("td", { class: "num" + (isBest ? " best" : ""), title: isBest ? "best" : null }, fmt(v));
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

    function corrTable(data) {
      var rows = data.correlations || [];
      var card = $("#corr-card");
      card.hidden = !rows.length;
      if (!rows.length) return;
      var t = clear($("#corr-table"));
      t.appendChild(el("thead", null, el("tr", null, el("th", null, "Measure"), el("th", null, "Better"), el("th", { class: "num" }, "τ-a with the gap"), el("th", { class: "num" }, "runs"), el("th", null, "Agrees with its direction?"))));
      var body = el("tbody");
      rows
        .slice()
        .sort(function (a, b) { return Math.abs(b.tau || 0) - Math.abs(a.tau || 0); })
        .forEach(function (r) {
          var agrees = "";
          if (typeof r.tau === "number" && r.direction && r.tau !== 0) {
            agrees = (r.direction === "lower_is_better") === r.tau > 0 ? "yes" : "no";
          }
          body.appendChild(el("tr", null, el("td", { class: "mono" }, r.key), el("td", null, r.direction === "higher_is_better" ? "↑" : r.direction === "lower_is_better" ? "↓" : ""), el("td", { class: "num" }, typeof r.tau === "number" ? r.tau.toFixed(2) : "—"), el("td", { class: "num" }, String(r.n)), el("td", null, agrees)));
        });
      t.appendChild(body);
    }

    function shareControls(data) {
      var shareBtn = $("#share-btn");
      var revokeBtn = $("#revoke-btn");
      var box = $("#share-box");
      var known = null;
      try {
        known = window.sessionStorage.getItem("genscope.share." + cid);
      } catch (e) {
        known = null;
      }
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
            try {
              window.sessionStorage.setItem("genscope.share." + cid, known);
            } catch (e) {
              /* ignore */
            }
            showUrl(known);
          })
          .catch(function (err) { showError($("#compare-error"), err); })
          .then(function () { shareBtn.disabled = false; });
      };
      revokeBtn.onclick = function () {
        api("/api/comparisons/" + encodeURIComponent(cid) + "/share", { method: "DELETE" })
          .then(function (r) {
            known = null;
            try {
              window.sessionStorage.removeItem("genscope.share." + cid);
            } catch (e) {
              /* ignore */
            }
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

  // ------------------------------------------------------------------ boot

  document.addEventListener("DOMContentLoaded", function () {
    initAuth();
    var page = document.body.getAttribute("data-page");
    if (page === "runs") initDashboard();
    else if (page === "run") initRun();
    else if (page === "compare" || page === "share") initCompare();
  });
})();
