/* GenScope dashboard, the upload panel of the runs page: choose a checkpoint, its architecture,
 * a dataset and the measures, upload with progress, then start the run and open its page.
 * Helpers come from the core (app.js, window.GenScope). */
(function (gs) {
  "use strict";

  var $ = gs.$, el = gs.el, clear = gs.clear, api = gs.api, upload = gs.upload,
    showError = gs.showError, hideError = gs.hideError;

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

  document.addEventListener("DOMContentLoaded", initUpload);
})(window.GenScope);
