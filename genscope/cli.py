"""The ``genscope`` command line (interfaces.md §2).

Errors a user can cause print one line, ``error [code]: message``, and exit with status 2;
an unexpected failure prints one line too (set ``GENSCOPE_DEBUG=1`` for the traceback) and exits
with status 1.

The engine's commands are defined here (analyze, inspect, measures, demo, study); the service's
(serve, worker, users) are added from the ``genscope.commands`` entry points
(:mod:`genscope.command_plugins`), so the engine imports nothing of the service.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genscope.command_plugins import PluginGroup, unavailable_command
from genscope.console import err_console, fail, out_console
from genscope.demo import DEMO_MEASURES
from genscope.errors import BadArchitecture, BadParameter, GenScopeError
from genscope.io.formats import suffix_summary

app = typer.Typer(
    cls=PluginGroup,  # the service's commands, loaded only when asked for
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="GenScope: generalization diagnostics for deep networks.",
)


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except GenScopeError as exc:
        fail(exc.code, exc.message, 2)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        if os.environ.get("GENSCOPE_DEBUG") == "1":
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        fail(
            "internal_error",
            f"{type(exc).__name__}: {first} (GENSCOPE_DEBUG=1 shows the traceback)",
            1,
        )


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[float, str], None]]:
    if quiet:
        yield lambda _f, _m: None
        return
    with Progress(
        TextColumn("{task.description:<48.48}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=1.0)

        def update(fraction: float, message: str) -> None:
            bar.update(task, completed=fraction, description=message)

        yield update


def _parse_arch_config(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    text = raw
    if not raw.lstrip().startswith("{") and Path(raw).is_file():
        text = Path(raw).read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadArchitecture(
            f"--arch-config is not valid JSON ({exc.msg} at char {exc.pos})"
        ) from None
    except (ValueError, RecursionError) as exc:  # over-long integers, absurd nesting
        raise BadArchitecture(f"--arch-config cannot be read ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise BadArchitecture("--arch-config must be a JSON object")
    return value


@app.command()
def analyze(
    checkpoint: Annotated[Path, typer.Argument(help=f"the checkpoint: {suffix_summary()}")],
    data: Annotated[str, typer.Option("--data", help="dataset spec: digits, moons, npz:PATH, ...")],
    arch: Annotated[
        str | None, typer.Option(help="zoo architecture for weights-only files")
    ] = None,
    arch_config: Annotated[
        str | None, typer.Option(help="architecture config: JSON or a file")
    ] = None,
    measures: Annotated[
        str, typer.Option(help="measure ids or groups, comma-separated")
    ] = "margin.output",
    hessian_samples: Annotated[int, typer.Option(min=1)] = 1000,
    margin_samples: Annotated[int, typer.Option(min=1)] = 10_000,
    param: Annotated[list[str] | None, typer.Option(help="MEASURE.NAME=VALUE, repeatable")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32 | float64")] = "float32",
    out: Annotated[Path | None, typer.Option(help="where to write the report JSON")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar or summary")] = False,
) -> None:
    """Analyse one checkpoint on one dataset and write the report."""
    with _user_errors():
        report_path = run_analysis(
            checkpoint,
            data,
            arch,
            arch_config,
            measures,
            hessian_samples,
            margin_samples,
            param or [],
            seed,
            device,
            dtype,
            out,
            quiet,
        )
        if quiet:
            print(report_path)


def run_analysis(
    checkpoint: Path,
    data: str,
    arch: str | None,
    arch_config: str | None,
    measures: str,
    hessian_samples: int,
    margin_samples: int,
    param: list[str],
    seed: int,
    device: str,
    dtype: str,
    out: Path | None,
    quiet: bool,
) -> Path:
    from genscope.analysis import analyze as run
    from genscope.measures.context import AnalysisOptions
    from genscope.measures.registry import parse_param_assignments

    if device not in {"cpu", "cuda", "auto"}:
        raise BadParameter(f"--device must be cpu, cuda or auto, got {device!r}")
    if dtype not in {"float32", "float64"}:
        raise BadParameter(f"--dtype must be float32 or float64, got {dtype!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BadParameter("--device cuda was asked for but no CUDA device is available")
    options = AnalysisOptions(
        seed=seed,
        hessian_samples=hessian_samples,
        margin_samples=margin_samples,
        device=device,
        dtype=dtype,
    )
    overrides = parse_param_assignments(param)
    config = _parse_arch_config(arch_config)
    with _progress(quiet) as progress:
        report = run(
            checkpoint,
            data,
            measures=measures,
            params=overrides,
            options=options,
            progress=progress,
            arch=arch,
            arch_config=config,
        )
    path = out or Path(f"{checkpoint.stem}.report.json")
    report.save(path)
    if not quiet:
        print_summary(report.to_dict(), path)
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_summary(report: dict[str, Any], path: Path) -> None:
    """A readable summary of a report on standard output."""
    model, data, metrics = report["model"], report["data"], report["metrics"]
    out_console.print(
        f"[bold]model[/] {model['format']} {model.get('arch') or ''} · "
        f"{model['num_params']:,} parameters · {len(model['layers'])} affine layers"
    )
    out_console.print(
        f"[bold]data[/]  {data['name']} · {data['n_train']} train / {data['n_test']} test · "
        f"{data['num_classes']} classes"
    )
    table = Table(show_header=True, header_style="bold")
    for col in ("", "loss", "accuracy"):
        table.add_column(col)
    table.add_row("train", _fmt(metrics["train_loss"]), _fmt(metrics["train_accuracy"]))
    table.add_row("test", _fmt(metrics["test_loss"]), _fmt(metrics["test_accuracy"]))
    out_console.print(table)
    out_console.print(
        f"generalization gap (test error − train error): {_fmt(metrics['generalization_gap'])}"
    )
    measures = Table(show_header=True, header_style="bold")
    for col in ("measure", "value", "status", "seconds"):
        measures.add_column(col)
    for mid, res in report["measures"].items():
        status = res.get("status", "ok")
        shown = (
            status
            if status == "ok"
            else f"[red]{status}[/]: {res.get('error', {}).get('message', '')}"
        )
        measures.add_row(mid, _fmt(res.get("value")), shown, f"{res['seconds']:.2f}")
    out_console.print(measures)
    out_console.print(f"report written to [bold]{path}[/]")


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="a checkpoint, or a dataset file with --dataset")],
    arch: Annotated[
        str | None, typer.Option(help="zoo architecture for weights-only files")
    ] = None,
    arch_config: Annotated[
        str | None, typer.Option(help="architecture config: JSON or a file")
    ] = None,
    dataset: Annotated[bool, typer.Option("--dataset", help="inspect a dataset file")] = False,
) -> None:
    """Load a checkpoint (or dataset) safely and print what it is as one JSON object.

    On a bad file, prints ``{"error": {"code", "message", "detail"}}`` and exits with status 2.
    The service runs this in a subprocess so that its own process never imports torch.
    """
    from genscope.errors import GenScopeError

    try:
        if dataset:
            from genscope.io.datasets import load_dataset

            kind = "safetensors" if path.suffix == ".safetensors" else "npz"
            info = load_dataset(f"{kind}:{path}").summary()
        else:
            from genscope.graph import affine_layers
            from genscope.io.checkpoints import load_checkpoint

            loaded = load_checkpoint(path, arch=arch, arch_config=_parse_arch_config(arch_config))
            info = loaded.summary()
            info["layers"] = [layer.to_dict() for layer in affine_layers(loaded.module)]
    except GenScopeError as exc:
        print(json.dumps({"error": exc.to_dict()}, default=str))
        raise typer.Exit(2) from None
    print(json.dumps(info, default=str))


@app.command("measures")
def list_measures(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the measures with their groups and parameters."""
    from genscope.measures.registry import all_measures

    items = [m.describe() for m in all_measures()]
    if as_json:
        print(json.dumps(items, indent=1))
        return
    table = Table(show_header=True, header_style="bold")
    for col in ("id", "group", "direction", "parameters"):
        table.add_column(col)
    for m in items:
        params = ", ".join(f"{p['name']}={p['default']}" for p in m["params"])
        table.add_row(m["id"], m["group"], m["direction"] or "", params)
    out_console.print(table)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="interface for the server")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port for the server (0: any free port)")] = 8000,
    measures: Annotated[str, typer.Option(help="measure ids or groups")] = DEMO_MEASURES,
    models: Annotated[int, typer.Option(min=2, max=8, help="how many models to train")] = 6,
    exit_when_done: Annotated[
        bool,
        typer.Option("--exit", help="stop the server once the comparison exists (tests, CI)"),
    ] = False,
) -> None:
    """Train a family of small MLPs on digits, analyse them through the service and compare them.

    Starts ``genscope serve`` (API, dashboard, one worker), uploads the models, runs the
    analyses, creates a comparison and prints its URL; then keeps serving until Ctrl-C (or exits
    with ``--exit``).
    """
    service = unavailable_command("serve")
    if service is not None:
        fail("not_installed", f"genscope demo starts the service, but {service.message}", 2)
    with _user_errors():
        from genscope.demo import run_demo

        status = run_demo(
            host=host,
            port=port,
            measures=measures,
            n_models=models,
            exit_when_done=exit_when_done,
            console=out_console,
        )
    raise typer.Exit(status)


def _study_labels(path: Path, keys: list[tuple[str, ...]]) -> list[dict[str, Any]]:
    """Labels as a list in report order, or an object keyed by one of each report's ``keys``
    (a report file's path, name or stem; a run's id)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadParameter(f"--labels {path}: not a readable JSON file ({exc})") from None
    if isinstance(raw, list):
        if len(raw) != len(keys) or not all(isinstance(v, dict) for v in raw):
            raise BadParameter(
                f"--labels holds a list of {len(raw)} entries; give one object per report "
                f"({len(keys)}), in order"
            )
        return raw
    if not isinstance(raw, dict):
        raise BadParameter("--labels must be a JSON list or object")
    out = []
    for candidates in keys:
        found = next((raw[k] for k in candidates if k in raw), None)
        if not isinstance(found, dict):
            raise BadParameter(
                f"--labels has no object for {candidates[0]} (keys: {', '.join(candidates)})"
            )
        out.append(found)
    return out


def fetch_run_reports(client: Any, run_ids: list[str]) -> list[dict[str, Any]]:
    """The reports of finished runs from the service (``GET /api/runs/{id}``) through an
    ``httpx.Client`` whose base URL is the service's."""
    reports = []
    for run_id in run_ids:
        answer = client.get(f"/api/runs/{run_id}")
        if answer.status_code != 200:
            raise BadParameter(f"run {run_id}: the service answered {answer.status_code}")
        body = answer.json()
        if body.get("status") != "succeeded" or not body.get("report"):
            raise BadParameter(f"run {run_id} has no report (status {body.get('status')})")
        reports.append(body["report"])
    return reports


@app.command()
def study(
    reports: Annotated[
        list[Path] | None, typer.Argument(help="report JSON files, one per run")
    ] = None,
    runs: Annotated[
        list[str] | None, typer.Option("--runs", help="run ids on the service (repeatable)")
    ] = None,
    url: Annotated[str, typer.Option(envvar="GENSCOPE_URL", help="the service's URL")] = (
        "http://127.0.0.1:8000"
    ),
    token: Annotated[
        str | None, typer.Option(envvar="GENSCOPE_TOKEN", help="bearer token (auth on)")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="hyper-parameter labels: a JSON list or object")
    ] = None,
    out: Annotated[Path, typer.Option(help="where to write the study JSON")] = Path("study.json"),
    n_boot: Annotated[int, typer.Option(min=1, help="bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Rank the measures of several reports by how well they predict the generalization gap."""
    from genscope.study import study as run_study

    with _user_errors():
        paths, run_ids = list(reports or []), list(runs or [])
        if bool(paths) == bool(run_ids):
            raise BadParameter("give report files or --runs ID ..., one of the two")
        docs = []
        for rp in paths:
            try:
                docs.append(json.loads(rp.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError) as exc:
                raise BadParameter(f"{rp}: not a readable report ({exc})") from None
        if run_ids:
            import httpx

            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                    docs = fetch_run_reports(client, run_ids)
            except httpx.HTTPError as exc:
                raise BadParameter(f"cannot reach the service at {url} ({exc})") from None
        names = [rp.stem for rp in paths] or run_ids
        keys = [(str(rp), rp.name, rp.stem) for rp in paths] or [(r,) for r in run_ids]
        label_list = _study_labels(labels, keys) if labels is not None else None
        try:
            result = run_study(docs, label_list, names=names, n_boot=n_boot, seed=seed)
        except ValueError as exc:
            raise BadParameter(str(exc)) from None
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, allow_nan=False), encoding="utf-8")
        table = Table(
            show_header=True,
            header_style="bold",
            title="measure vs generalization gap (Kendall τ-a)",
            caption="τ adj.: τ signed by the measure's direction (positive: as claimed); "
            "measures without a direction (—) are ranked by |τ|",
        )
        for col in ("#", "measure", "direction", "runs", "τ adj.", "95% CI", "τ", "Ψ", "CMI"):
            table.add_column(col)
        for e in result["measures"]:
            ci = e["ci_adjusted"] or e["ci"]
            gran = (e.get("granulated") or {}).get("Psi_adjusted")
            if gran is None:
                gran = (e.get("granulated") or {}).get("Psi")
            table.add_row(
                str(e["rank"]),
                e["id"],
                e["direction"] or "—",
                str(e["runs"]),
                _fmt(e["tau_adjusted"]),
                f"[{_fmt(ci[0])}, {_fmt(ci[1])}]",
                _fmt(e["tau"]),
                _fmt(gran),
                _fmt((e.get("cmi") or {}).get("score")),
            )
        out_console.print(table)
        if result["skipped"]:
            out_console.print(
                "skipped: " + ", ".join(f"{s['id']} ({s['runs']} runs)" for s in result["skipped"])
            )
        out_console.print(f"study of {len(docs)} reports written to [bold]{out}[/]")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
