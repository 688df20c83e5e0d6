"""The ``genscope`` command line (interfaces.md §2).

Errors a user can cause print one line, ``error [code]: message``, and exit with status 2;
an unexpected failure prints one line too (set ``GENSCOPE_DEBUG=1`` for the traceback) and exits
with status 1.
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
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genscope.errors import BadArchitecture, BadParameter, GenScopeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="GenScope: generalization diagnostics for deep networks.",
)
err_console = Console(stderr=True)
out_console = Console()

DEMO_MEASURES = "margins,hessian,sharpness,bounds"


def _fail(code: str, message: str, status: int) -> None:
    """One line on standard error, ``error [code]: message``, then exit with ``status``."""
    typer.echo(f"error [{code}]: {' '.join(message.split())}", err=True)
    raise typer.Exit(status)


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except GenScopeError as exc:
        _fail(exc.code, exc.message, 2)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        if os.environ.get("GENSCOPE_DEBUG") == "1":
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _fail(
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
    if not isinstance(value, dict):
        raise BadArchitecture("--arch-config must be a JSON object")
    return value


@app.command()
def analyze(
    checkpoint: Annotated[
        Path, typer.Argument(help="the checkpoint: .pt2, .safetensors, .pt/.pth/.bin")
    ],
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
def demo(
    out: Annotated[Path, typer.Option(help="where to write the report JSON")] = Path(
        "genscope-demo.report.json"
    ),
    measures: Annotated[str, typer.Option(help="measure ids or groups")] = "all",
    quiet: Annotated[bool, typer.Option("--quiet")] = False,
) -> None:
    """Analyse the bundled demo model (an MLP trained on digits) and print a summary."""
    from genscope.assets import demo_model_path, demo_model_spec

    with _user_errors():
        spec = demo_model_spec()
        run_analysis(
            demo_model_path(),
            "digits",
            spec["arch"],
            json.dumps(spec["arch_config"]),
            measures,
            512,
            10_000,
            [],
            0,
            "auto",
            "float32",
            out,
            quiet,
        )


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


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
