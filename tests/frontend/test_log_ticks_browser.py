"""The log axes' tick labels as plotly.js draws them (headless Chromium): every label reads as
a number of the axis, never a lone digit between powers of ten."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import pytest

from frontend import figures as F
from frontend.figures.style import log_axis, style

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PLOTLY_JS.exists(), reason="plotly.js is not installed"),
]


def _ticks(driver: Any, page: Path, figures: list[dict], axis: str) -> list[list[str]]:
    """The tick label texts of ``axis`` ("x" or "y") of each figure, as drawn."""
    page.write_text(
        "<!doctype html><html><body><div id='p'></div>"
        f"<script src='{PLOTLY_JS.as_uri()}'></script></body></html>",
        encoding="utf-8",
    )
    driver.get(page.as_uri())
    out = []
    for fig in figures:
        labels = driver.execute_async_script(
            """
            var fig = arguments[0], axis = arguments[1], done = arguments[2];
            var node = document.getElementById("p");
            Plotly.newPlot(node, fig.data, fig.layout).then(function () {
              // a superscript (the exponent of 10ⁿ) comes back after a "^"
              done(Array.from(node.querySelectorAll("." + axis + "tick text")).map(function (t) {
                return Array.from(t.childNodes).map(function (c) {
                  var sup = c.nodeType === 1 && /super/.test(c.getAttribute("style") || "");
                  return (sup ? "^" : "") + c.textContent;
                }).join("");
              }));
            });
            """,
            fig,
            axis,
        )
        out.append(labels)
    return out


def _value(label: str) -> float:
    """A tick label as a number: plain (61.9, 0.002, 5e-7) or a power of ten (10ⁿ)."""
    label = label.replace("−", "-").replace("\u2212", "-")
    # plotly's "power" form: 10, then the exponent as a superscript between zero-width spaces
    power = re.fullmatch(r"10\^?\u200b?(-?\d+)\u200b", label) or re.fullmatch(r"10\^(-?\d+)", label)
    if power:
        return 10.0 ** int(power.group(1))
    return float(label)


def test_log_tick_labels_read_as_numbers(tmp_path: Path) -> None:
    from tests.e2e.harness import browser_session  # skips when Chromium or selenium is missing

    cases = [  # (values on the axis, the decade span's regime)
        [1.3, 61.9, 240.0],
        [0.002, 0.05],
        [3e-7, 8e-6],
        [1e-3, 1e4],
        [1e-9, 1e3],
    ]
    figures = []
    for values in cases:
        fig = style(go.Figure())
        fig.add_scatter(x=list(range(len(values))), y=values)
        fig.update_yaxes(**log_axis(values))
        figures.append(json.loads(F.to_json(fig)))
    control = style(go.Figure())  # plotly's default log ticks, for contrast
    control.add_scatter(x=[0, 1, 2], y=cases[0])
    control.update_yaxes(type="log")
    with browser_session() as driver:
        *drawn, default = _ticks(
            driver, tmp_path / "ticks.html", [*figures, json.loads(F.to_json(control))], "y"
        )
    # the misreading this guards against: "2", "5" standing for 20, 50, 200...
    assert [_value(t) for t in default] != sorted(_value(t) for t in default), default
    for values, labels in zip(cases, drawn, strict=True):
        assert len(labels) >= 2, (values, labels)
        numbers = [_value(t) for t in labels]  # raises on a label that is not a number
        assert numbers == sorted(numbers), labels
        lo, hi = min(values), max(values)
        # the labels are values of the axis (a lone "2" would sit far below 20 on [1, 240])
        assert all(lo / 20 <= v <= hi * 20 for v in numbers), (values, labels)
        if math.log10(hi / lo) <= 4:
            assert len(set(numbers)) == len(numbers)
