"""Hostile and broken input files: every case of the corpus (tests/hostile.py) is refused by the
loaders with its error code, in one line, without running a payload, extracting anything or
allocating what its headers claim; clean files of every format still load; measure parameters
out of range are refused."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from genscope.errors import BadParameter, GenScopeError, UnsafeCheckpoint
from genscope.io.archives import ArchiveError, check_zip, scan_pickle, weights_global
from genscope.io.checkpoints import load_checkpoint
from genscope.io.datasets import load_dataset
from tests.hostile import (
    CATEGORIES,
    GIB,
    MEMO_TARGETS,
    MLP,
    Case,
    Entry,
    clean_pt2,
    clean_safetensors,
    clean_state_dict,
    corpus,
    deflated_zeros,
    good_arrays,
    memo_pickle,
    npy_header,
    npz_bytes,
    pt2_program,
    raw_zip,
    registered_operators,
    st_bytes,
    write_case,
    zeros_crc,
    zip_members,
)

CASES = corpus()
ESCAPES = ("/tmp/genscope-x", "/etc/genscope-x")


def _load(case: Case, path: Path) -> Any:
    if case.kind == "dataset":
        return load_dataset(f"{case.suffix[1:]}:{path}")
    return load_checkpoint(path, arch=case.arch, arch_config=case.arch_config)


def test_the_corpus_covers_every_category_with_one_api_representative() -> None:
    for category in CATEGORIES:
        members = [c for c in CASES if c.category == category]
        assert members, category
        assert sum(c.api for c in members) == 1, category


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_file_is_refused(case: Case, tmp_path: Path) -> None:
    path, marker = write_case(case, tmp_path)
    start = time.perf_counter()
    with pytest.raises(GenScopeError) as info:
        _load(case, path)
    elapsed = time.perf_counter() - start
    err = info.value
    assert err.code == case.code, err.message
    assert err.message and "\n" not in err.message
    json.dumps(err.to_dict(), default=str)  # the CLI prints it as one JSON line
    assert not marker.exists(), "a payload ran"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "something was written"
    assert not any(Path(p).exists() for p in ESCAPES)
    assert elapsed < 5.0, f"refusing took {elapsed:.1f} s"


CLEAN = {
    "pt2": (clean_pt2, ".pt2", None),
    "state-dict": (clean_state_dict, ".pt", "mlp"),
    "safetensors": (clean_safetensors, ".safetensors", "mlp"),
}


@pytest.mark.parametrize("name", list(CLEAN))
def test_clean_checkpoints_still_load(name: str, tmp_path: Path) -> None:
    build, suffix, arch = CLEAN[name]
    path = tmp_path / f"clean{suffix}"
    path.write_bytes(build())
    loaded = load_checkpoint(path, arch=arch, arch_config=MLP if arch else None)
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    with torch.no_grad():
        assert loaded.module(x).shape == (2, 2)


@pytest.mark.parametrize("kind", ["npz", "safetensors"])
def test_clean_datasets_still_load(kind: str, tmp_path: Path) -> None:
    path = tmp_path / f"data.{kind}"
    path.write_bytes(npz_bytes(**good_arrays()) if kind == "npz" else st_bytes(**good_arrays()))
    data = load_dataset(f"{kind}:{path}")
    assert (data.n_train, data.n_test, data.num_classes) == (12, 4, 2)


def test_compressed_npz_with_a_legitimate_ratio_loads(tmp_path: Path) -> None:
    arrays = good_arrays(n=4096)
    arrays["x_train"][:] = 0.0  # compresses well, far below the bomb ratio
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path = tmp_path / "zeros.npz"
    path.write_bytes(buf.getvalue())
    assert load_dataset(f"npz:{path}").n_train == 4096


def test_unpacked_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.pt"
    path.write_bytes(clean_state_dict())
    monkeypatch.setenv("GENSCOPE_MAX_UNPACKED_MB", "0.0001")  # about 100 bytes
    with pytest.raises(UnsafeCheckpoint, match="GENSCOPE_MAX_UNPACKED_MB"):
        load_checkpoint(path, arch="mlp", arch_config=MLP)
    with pytest.raises(ArchiveError, match="zip bomb"):
        check_zip(path, max_unpacked=10)
    monkeypatch.delenv("GENSCOPE_MAX_UNPACKED_MB")
    assert load_checkpoint(path, arch="mlp", arch_config=MLP).num_params == 42


def test_a_member_that_lies_about_its_size_is_read_only_as_far_as_declared(
    tmp_path: Path,
) -> None:
    """The member inflates to 1 GiB but declares (and checksums) 64 bytes: readers stop there."""
    header = npy_header((8, 2))
    declared = header + bytes(64)
    others = [a for a in zip_members(npz_bytes(**good_arrays())) if a.name != "x_train.npy"]
    others = [a for a in others if a.name.startswith("y_train")]
    lying = Entry(
        "x_train.npy",
        deflated_zeros(GIB, header),
        method=8,
        size=len(declared),
        crc=zeros_crc(0, declared),
    )
    path = tmp_path / "lying.npz"
    path.write_bytes(raw_zip([*others, lying]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        data = load_dataset(f"npz:{path}")
        assert data.x_train.shape == (8, 2)
    except GenScopeError as exc:
        assert exc.code == "bad_dataset"
    assert time.perf_counter() - start < 2.0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 256, f"peak RSS grew by {grown_mb:.0f} MB"


_RSS_SCRIPT = """
import json, sys
from pathlib import Path
from genscope.errors import GenScopeError
from genscope.io.checkpoints import load_checkpoint
from genscope.io.datasets import load_dataset
out = {}
for spec in json.loads(sys.argv[1]):
    path = Path(spec["path"])
    try:
        if spec["dataset"]:
            load_dataset(f"{path.suffix[1:]}:{path}")
        else:
            load_checkpoint(path, arch=spec["arch"], arch_config=spec["config"])
        out[path.name] = "loaded"
    except GenScopeError as exc:
        out[path.name] = exc.code
# VmHWM is this process image's own peak; ru_maxrss would carry the parent's RSS across fork
status = Path("/proc/self/status").read_text().splitlines()
hwm = next(line for line in status if line.startswith("VmHWM"))
out["maxrss_mb"] = int(hwm.split()[1]) / 1024
print(json.dumps(out))
"""


def test_peak_memory_stays_small_on_bombs_and_absurd_headers(tmp_path: Path) -> None:
    """In a fresh process: the 1 GiB bombs, the 10^12-element headers and a 400M-parameter
    architecture named for a tiny file are refused without allocating what they claim."""
    ids = {
        "zip-deflated-1gib",
        "npz-deflated-1gib",
        "npz-lying-size",
        "st-shape-1e12",
        "pt-storage-1e12",
        "npz-npy-shape-1e12",
    }
    specs = []
    for case in (c for c in CASES if c.id in ids):
        path, _marker = write_case(case, tmp_path)
        specs.append(
            {
                "path": str(path),
                "dataset": case.kind == "dataset",
                "arch": case.arch,
                "config": case.arch_config,
            }
        )
    big = tmp_path / "big-arch.safetensors"
    big.write_bytes(clean_safetensors())
    # 20000 x 20000 weights: 400M parameters (1.6 GB), under the zoo's cap.
    config = {"input_dim": 20_000, "widths": [20_000], "num_classes": 2}
    specs.append({"path": str(big), "dataset": False, "arch": "mlp", "config": config})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, json.dumps(specs)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("big-arch.safetensors") == "weight_mismatch"
    assert all(
        code in {"unsafe_checkpoint", "bad_checkpoint", "bad_dataset"}
        for k, code in out.items()
        if k != "maxrss_mb"
    ), out
    assert out["maxrss_mb"] < 640, f"peak RSS {out['maxrss_mb']:.0f} MB"


def _cli_inspect(*args: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "genscope.cli", "inspect", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_inspect_refuses_an_absurd_architecture(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(clean_safetensors())
    config = json.dumps({"input_dim": 2, "widths": [10**9], "num_classes": 2})
    code, out = _cli_inspect(str(path), "--arch", "mlp", "--arch-config", config)
    assert code == 2 and out["error"]["code"] == "bad_architecture", out
    assert "widths" in out["error"]["message"]


# --- the scanners on their own ------------------------------------------------------------------


def test_scan_pickle_reports_imports_outside_the_allow_list() -> None:
    with zipfile.ZipFile(io.BytesIO(clean_state_dict())) as zf:
        pickles = [n for n in zf.namelist() if n.endswith("data.pkl")]
        assert pickles
        for name in pickles:
            assert scan_pickle(zf.read(name), weights_global) == [], name
    evil = b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."
    assert scan_pickle(evil, weights_global) == ["posix.system"]
    stacked = b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93."
    assert scan_pickle(stacked, weights_global) == ["STACK_GLOBAL builtins.exec"]
    with pytest.raises(ArchiveError, match="corrupt pickle"):
        scan_pickle(b"\x80\x02\xff\xff", weights_global)


@pytest.mark.parametrize("put", ["PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"])
@pytest.mark.parametrize("get", ["GET", "BINGET", "LONG_BINGET"])
def test_scan_pickle_follows_the_memo_and_the_stack(put: str, get: str) -> None:
    """STACK_GLOBAL is judged by what it pops: strings fetched back from the memo after a decoy
    pair was pushed and popped (the payload really runs: ``pickle.loads`` calls the target)."""
    for module, name in MEMO_TARGETS:
        data = memo_pickle(module, name, put, get, "x")
        assert scan_pickle(data, weights_global) == [f"STACK_GLOBAL {module}.{name}"]
    calls: list[str] = []
    data = memo_pickle("tests.engine.test_hostile_files", "_record", put, get, "ran")
    _RECORD.append(calls)
    try:
        pickle.loads(data)  # the reference: the pickle machine imports what the scan names
    finally:
        _RECORD.pop()
    assert calls == ["ran"]


_RECORD: list[list[str]] = []


def _record(text: str) -> None:
    _RECORD[-1].append(text)


def test_every_registered_operator_outside_the_allow_list_is_refused() -> None:
    """Generated from torch's dispatcher: thousands of operators, none listed by hand."""
    from genscope.io.export_check import ALLOWED_OPERATORS, ProgramRefused, check_program_json

    registered = registered_operators()
    import operator

    python = {t.split(".", 1)[1] for t in ALLOWED_OPERATORS if t.startswith("_operator.")}
    assert python and all(callable(getattr(operator, n, None)) for n in python), python
    aten = {t for t in ALLOWED_OPERATORS if t.startswith("torch.ops.")}
    assert aten <= set(registered), "an allowed operator is not registered (a typo in the list)"
    refused = [t for t in registered if t not in ALLOWED_OPERATORS]
    assert len(refused) > 2000
    program = {"graph_module": {"graph": {"nodes": [{"target": "", "inputs": []}]}}}
    for target in refused:
        program["graph_module"]["graph"]["nodes"][0]["target"] = target
        with pytest.raises(ProgramRefused, match="is not on the list|^training:"):
            check_program_json(program, "model.json")


def test_guards_and_symbolic_expressions_follow_the_grammar() -> None:
    from genscope.io.export_check import ProgramRefused, check_expression, check_guard

    for good in (
        "s77",
        "2*s77 + 1",
        "FloorDiv(s0, 2)",
        "Symbol('s77', positive=True, integer=True)",
    ):
        check_expression(good, "m")
    for bad in ("__import__('os')", "s0.__class__", "lambda: 1", "[s0]", "'x'", "exec"):
        with pytest.raises(ProgramRefused):
            check_expression(bad, "m")
    for good in ("L['x'].size()[1] == 3", "L['x'].size()[0] >= 2 and L['x'].stride()[1] == 1"):
        check_guard(good, "m")
    for bad in ("__import__('os').system('x')", "L['x'].__class__", "open('f')", "L['x'].size(1)"):
        with pytest.raises(ProgramRefused):
            check_guard(bad, "m")


def test_loaded_graphs_are_checked_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Were the JSON check ever bypassed, the loaded fx graph is checked before it runs."""
    from genscope.io import checkpoints

    monkeypatch.setattr(checkpoints, "_check_program", lambda *_a: None)
    path = tmp_path / "m.pt2"

    def relu_to_sin(program: dict[str, Any]) -> None:  # same signature, not on the list
        for node in program["graph_module"]["graph"]["nodes"]:
            if node["target"] == "torch.ops.aten.relu.default":
                node["target"] = "torch.ops.aten.erfinv.default"

    path.write_bytes(pt2_program(relu_to_sin))
    with pytest.raises(UnsafeCheckpoint, match="erfinv.default"):
        load_checkpoint(path)


ZOO_EXPORTS = {
    "mlp": {"input_dim": 4, "widths": [8, 8], "num_classes": 3, "batchnorm": True},
    "lenet": {"in_channels": 1, "input_size": 28},
    "resnet": {"depth": 8, "width": 4, "cifar_stem": True},
    "vgg": {"depth": 11, "width_multiplier": 0.125, "batchnorm": True},
    "preact_resnet18": {"width": 4},
    "wide_resnet": {"depth": 10, "widen_factor": 1},
    "nin": {"width": 8, "batchnorm": True},
}


def _zoo_input(arch: str) -> torch.Tensor:
    if arch == "mlp":
        return torch.randn(4, 4)
    return torch.randn(4, 1, 28, 28) if arch == "lenet" else torch.randn(4, 3, 32, 32)


@pytest.mark.parametrize(
    "arch",
    [
        pytest.param(a, marks=[] if a in ("mlp", "resnet") else pytest.mark.slow)
        for a in ZOO_EXPORTS
    ],
)
@pytest.mark.parametrize("decomposed", [False, True])
def test_exported_zoo_models_pass_the_allow_lists(
    arch: str, decomposed: bool, tmp_path: Path
) -> None:
    """Every zoo architecture exported with a dynamic batch, as torch.export gives it and in
    core ATen (``run_decompositions``), loads and gives the original logits."""
    from genscope.io.zoo import build_model

    torch.manual_seed(0)
    model = build_model(arch, ZOO_EXPORTS[arch]).eval()
    x = _zoo_input(arch)
    batch = torch.export.Dim("batch", min=2, max=1024)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    if decomposed:
        program = program.run_decompositions()
    path = tmp_path / f"{arch}.pt2"
    torch.export.save(program, str(path))
    loaded = load_checkpoint(path)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), model(x), atol=1e-5)


def test_torchscript_is_refused_with_how_to_export(tmp_path: Path) -> None:
    from genscope.io.zoo import build_model

    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(build_model("mlp", MLP).eval()), str(path))
    with pytest.raises(UnsafeCheckpoint) as info:
        load_checkpoint(path)
    assert "torch.export.export" in info.value.message and "--arch" in info.value.message


# --- measure parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("measure_id", "name", "raw"),
    [
        ("sharpness.sam", "rho", -0.1),
        ("hessian.density", "probes", 10**9),
        ("hessian.top_eigenvalues", "k", 10**9),
        ("hessian.top_eigenvalues", "k", True),
        ("hessian.top_eigenvalues", "k", "ten"),
        ("hessian.top_eigenvalues", "k", 2.5),
        ("hessian.top_eigenvalues", "k", float("inf")),
        ("hessian.top_eigenvalues", "tol", float("nan")),
        ("hessian.top_eigenvalues", "tol", "nan"),
        ("hessian.top_eigenvalues", "tol", 10**400),
        ("sharpness.sam", "rho", float("-inf")),
        ("sharpness.sam", "samples", 10**12),
        ("margin.robust", "eps", "0.1," * 600),
        ("margin.robust", "eps", 0.1),
        ("margin.all_layer", "batch_size", 10**9),
        ("collapse.nc1", "samples", 10**12),
        ("activations.sparsity", "samples", -5),
        ("stability.sgd", "lr", 1e300),
        ("hessian.density", "sigma2", 1e300),
        ("hessian.top_eigenvalues", "nope", 1),
    ],
)
def test_out_of_range_parameters_are_refused(measure_id: str, name: str, raw: Any) -> None:
    from genscope.measures.registry import resolve_measures, resolve_params

    with pytest.raises(BadParameter) as info:
        resolve_params(resolve_measures([measure_id]), {measure_id: {name: raw}})
    assert "\n" not in info.value.message and len(info.value.message) < 400


def test_every_numeric_parameter_is_bounded_and_strings_are_not_paths() -> None:
    """Unbounded numbers let one request ask for 10^9 probes; a string that names a file must be
    a checkpoint parameter, which the service only accepts as a checkpoint id."""
    from genscope.measures.registry import all_measures

    free_text = {
        ("margin.robust", "eps"),
        ("sharpness.sam", "sweep"),
        ("sharpness.adaptive_worst", "sweep"),
        ("sharpness.adaptive_average", "sweep"),
        ("sharpness.keskar", "sweep"),
    }  # lists of numbers, parsed and bounded at run time
    for m in all_measures():
        for p in m.params:
            if p.kind in (int, float) and p.choices is None:
                assert p.min is not None and p.max is not None, f"{m.id}.{p.name}"
                assert math.isfinite(p.min) and math.isfinite(p.max), f"{m.id}.{p.name}"
            if p.kind is str and p.choices is None:
                assert p.checkpoint or (m.id, p.name) in free_text, f"{m.id}.{p.name}"


def test_too_many_robust_radii_are_refused_at_run_time() -> None:
    from genscope.measures.margins import MAX_EPS, _parse_eps

    assert len(_parse_eps(",".join(["0.1"] * MAX_EPS))) == MAX_EPS
    with pytest.raises(BadParameter, match="at most"):
        _parse_eps(",".join(["0.1"] * (MAX_EPS + 1)))


def test_k_beyond_the_parameter_count_fails_the_measure_with_bad_parameter() -> None:
    from genscope.analysis import analyze
    from genscope.io.zoo import build_model

    torch.manual_seed(0)
    model = build_model("mlp", {"input_dim": 2, "widths": [], "num_classes": 2})  # 6 params
    report = analyze(
        model,
        "moons",
        measures=["hessian.top_eigenvalues"],
        params={"hessian.top_eigenvalues": {"k": 7}},
    )
    result = report.measures["hessian.top_eigenvalues"]
    assert result.status == "failed"
    assert result.error is not None and result.error["code"] == "bad_parameter"
    assert "number of parameters (6)" in result.error["message"]
