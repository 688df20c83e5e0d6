"""Reports for the dashboard tests: real engine reports (:mod:`tests.frontend.reports`) and
transformations of them for the shapes a test needs (measures left out, non-finite values,
more examples, many runs). Nothing here invents a measure's detail."""

from __future__ import annotations

import atexit
import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tests.frontend.reports import RECIPES, engine_reports

#: A report the engine wrote in an earlier version, stored as the service would hold it.
STORED_SAMPLE = Path(__file__).with_name("data") / "digits_mlp.report.json"
#: The runs of a comparison: the same family of MLPs, differing in width, steps, label noise.
FAMILY = tuple(name for name in RECIPES if name.startswith("moons_family_"))

_folder: list[Path] = []


def use_folder(folder: Path) -> None:
    """Generate and cache the reports in ``folder`` (the session's pytest tmp dir)."""
    _folder[:] = [folder]


def _reports_folder() -> Path:
    if not _folder:  # used outside the frontend tests' session fixture: a folder of its own
        folder = Path(tempfile.mkdtemp(prefix="genscope-engine-reports-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _folder.append(folder)
    return _folder[0]


def report(name: str = "moons_mlp") -> dict[str, Any]:
    """A fresh copy of the engine's report ``name`` (:data:`tests.frontend.reports.RECIPES`):
    ``moons_mlp`` has every measure a run-page figure draws."""
    return copy.deepcopy(engine_reports(_reports_folder(), (name,))[name])


def stored_report() -> dict[str, Any]:
    """The stored report of an earlier engine version (``all`` measures, untrained MLP)."""
    return json.loads(STORED_SAMPLE.read_text(encoding="utf-8"))


def named_runs(k: int = 3) -> list[dict[str, Any]]:
    """``k`` runs as the compare page receives them, the family's reports in turn."""
    return [
        {"id": f"r{i}", "name": f"run {i}", "status": "succeeded", "report": report(name)}
        for i, name in ((i, FAMILY[i % len(FAMILY)]) for i in range(k))
    ]


def stripped(rep: dict[str, Any], *drop: str) -> dict[str, Any]:
    """A copy of ``rep`` without the given measures."""
    out = copy.deepcopy(rep)
    for mid in drop:
        out["measures"].pop(mid, None)
    return out


def enlarged(rep: dict[str, Any], n: int, seed: int = 0) -> dict[str, Any]:
    """A copy of ``rep`` whose per-example margins (``values``, with their ``labels``) hold
    ``n`` examples: the recorded ones repeated, each scaled by a random factor in
    [1, 1 + 10⁻⁶) so that repeats differ."""
    out = copy.deepcopy(rep)
    rng = np.random.default_rng(seed)
    for mid, m in out["measures"].items():
        if not mid.startswith("margin.") or not isinstance(m, dict) or m.get("values") is None:
            continue
        values = np.asarray([np.nan if v is None else v for v in m["values"]], dtype=np.float64)
        if values.ndim != 1 or not len(values):
            continue
        reps = -(-n // len(values))
        tiled = np.tile(values, reps)[:n] * (1 + 1e-6 * rng.random(n))
        m["values"] = [None if not np.isfinite(v) else float(v) for v in tiled]
        if isinstance(m.get("labels"), list):
            m["labels"] = (m["labels"] * reps)[:n]
    return out
