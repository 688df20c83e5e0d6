/* GenScope dashboard, the shared core: small vanilla JS, no build step.
 * Every page loads this file first, then its own: dashboard.js and upload.js (the runs page),
 * run.js (one run), compare.js (a comparison, owned or shared). This file holds what more than
 * one page needs: DOM helpers, fetch with the token and the CSRF header, error display, and the
 * drawing of figures, which come ready-made from the server (plotly JSON built in
 * frontend/figures). The page files read it from window.GenScope. User text always goes in
 * via textContent. */
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
    /** The spec's help (plain text, contract "Help next to figures") as a "How to read this"
     * disclosure under the figure; kept open across redraws, replaced when the text changes. */
    function figureHelp(card, help) {
      var box = $(".figure-help", card);
      if (!help || !help.text) {
        if (box) box.remove();
        return;
      }
      var key = [help.title, help.text, help.source, help.anchor].join("\u0000");
      if (box && box._key === key) return;
      var open = box ? box.open : false;
      var parts = [el("summary", null, "How to read this"), el("p", null, help.text)];
      if (help.source) parts.push(el("p", { class: "muted small" }, "Source: " + help.source));
      if (help.anchor) parts.push(el("p", { class: "small muted" }, "Definition: " + help.anchor + " in docs/measures.md and docs/results.md"));
      var fresh = el.apply(null, ["details", { class: "figure-help", open: open }].concat(parts));
      fresh._key = key;
      if (box) box.replaceWith(fresh);
      else card.appendChild(fresh);
    }
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
      figureHelp(card, spec.help);
      card._spec = spec;
      if (spec.error) {  // the server could not draw it from this report: say so, draw nothing
        clear(plot).appendChild(el("div", { class: "error-box" }, "This figure could not be drawn from the report: " + spec.error));
        return;
      }
      Plotly.react(plot, spec.figure.data, spec.figure.layout, plotConfig(spec));
    });
  }

  // ------------------------------------------------------------------ runs

  /** The headline measures: columns of the runs table and cards of the run page's summary. */
  var HEADLINE = [
    ["margin.all_layer", "Median all-layer margin"],
    ["hessian.top_eigenvalues", "λ_max"],
    ["hessian.trace", "Hessian trace"],
    ["sharpness.adaptive_worst", "Adaptive sharpness"],
  ];

  /** A message in the page's banner (above the content). */
  function flash(text) {
    var f = $("#flash");
    if (!f) return;
    f.textContent = text;
    f.hidden = false;
  }

  /** A run that is still being analysed (its page polls until it is not). */
  function isLive(status) {
    return status === "queued" || status === "running";
  }

  // ------------------------------------------------------------------ share links
  // A new share link is remembered for the tab's session, keyed by the comparison, so the
  // compare page can show it again without minting another.

  var SHARE_KEY = "genscope.share.";

  function rememberShareUrl(comparisonId, url) {
    try {
      window.sessionStorage.setItem(SHARE_KEY + comparisonId, url);
    } catch (e) {
      /* storage unavailable */
    }
  }

  function knownShareUrl(comparisonId) {
    try {
      return window.sessionStorage.getItem(SHARE_KEY + comparisonId);
    } catch (e) {
      return null;
    }
  }

  function forgetShareUrl(comparisonId) {
    try {
      window.sessionStorage.removeItem(SHARE_KEY + comparisonId);
    } catch (e) {
      /* storage unavailable */
    }
  }

  // ------------------------------------------------------------------ exports and boot

  window.GenScope = Object.freeze({
    HEADLINE: HEADLINE,
    $: $,
    el: el,
    clear: clear,
    fmt: fmt,
    pct: pct,
    fmtDate: fmtDate,
    api: api,
    upload: upload,
    setProgress: setProgress,
    showError: showError,
    hideError: hideError,
    flash: flash,
    statusBadge: statusBadge,
    isLive: isLive,
    downloadBlob: downloadBlob,
    renderFigures: renderFigures,
    rememberShareUrl: rememberShareUrl,
    knownShareUrl: knownShareUrl,
    forgetShareUrl: forgetShareUrl,
  });

  // the token box works on every page; each page file starts its own page after this
  document.addEventListener("DOMContentLoaded", initAuth);
})();
