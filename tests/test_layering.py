"""Floors that point one way: the engine (``genscope/``) imports nothing of the service
(``backend/``, ``worker/``) or the dashboard (``frontend/``), and the API (``backend/``) imports
nothing of the worker; the broker setup they share lives in ``backend.broker``.

Checked twice: statically (every import statement in every module, including those inside
functions, and every ``importlib.import_module`` / ``find_spec`` / ``__import__`` string), and by
running the engine and its command line in a process where the service's packages cannot be
imported at all.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICE_PACKAGES = ("backend", "worker", "frontend")

# Calls whose first argument is a module name given as a string.
_IMPORTING_CALLS = {"import_module", "find_spec", "__import__", "find_loader"}


def _python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(module: str, level: int, name: str | None, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved)."""
    if level == 0:
        return name or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imported_modules(path: Path, module: str | None = None) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every module the file imports or names to an importing call;
    ``module`` is the file's dotted name (by default, from its place in the repository)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = module or _module_of(path)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, _absolute(module, node.level, node.module, is_package)
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in _IMPORTING_CALLS and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    yield node.lineno, first.value


def imports_of(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """``path:line module`` for each import under ``package`` of one of the ``forbidden`` roots."""
    found = []
    for path in _python_files(package):
        for line, name in imported_modules(path):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(ROOT)}:{line} {name}")
    return found


def test_the_import_finder_sees_imports_in_functions_and_import_module_strings(
    tmp_path: Path,
) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        textwrap.dedent(
            """
            import importlib
            from . import sibling

            def later():
                from backend.core import config
                import worker.tasks
                importlib.import_module("frontend.pages")
                importlib.util.find_spec("backend")
            """
        ),
        encoding="utf-8",
    )
    names = {name for _line, name in imported_modules(sample, module="genscope.io.sample")}
    assert {"backend.core", "worker.tasks", "frontend.pages", "backend", "genscope.io"} <= names


def test_the_engine_imports_nothing_of_the_service_or_the_dashboard() -> None:
    assert imports_of("genscope", SERVICE_PACKAGES) == []


def test_the_api_imports_nothing_of_the_worker() -> None:
    assert imports_of("backend", ("worker",)) == []


def test_the_broker_setup_is_shared_and_the_worker_re_exports_it() -> None:
    import backend.broker
    import worker.celery_app

    assert worker.celery_app.TASK_ANALYZE == backend.broker.TASK_ANALYZE == "genscope.analyze_run"
    assert worker.celery_app.QUEUES == backend.broker.QUEUES
    from backend.core.config import Settings

    settings = Settings(data_dir=ROOT / ".never-created")
    assert list(worker.celery_app.make_celery(settings).conf.include) == ["worker.tasks"]
    assert list(backend.broker.make_celery(settings).conf.include) == []


# --- the engine with the service's packages impossible to import ---------------------------------

_BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, sys

    class _Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {SERVICE_PACKAGES!r}:
                raise ImportError(f"{{name}} is not importable in this test")
            return None

    sys.meta_path.insert(0, _Blocked())
    """
)

# Runs the installed ``genscope`` console script's entry point with the given arguments.
_CONSOLE_ENTRY = textwrap.dedent(
    """
    import sys
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="genscope")
    sys.argv[0] = "genscope"
    script.load()()
    """
)


def _python(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_analyze_runs_with_the_service_packages_absent(tmp_path: Path) -> None:
    code = _BLOCKER + textwrap.dedent(
        """
        import json, torch
        import genscope
        from genscope.io.zoo import build_model

        torch.manual_seed(0)
        net = build_model("mlp", {"input_dim": 2, "widths": [8], "num_classes": 2}).eval()
        report = genscope.analyze(net, "moons", measures="margin.output").to_dict()
        leaked = sorted({m.split(".")[0] for m in sys.modules} & {"backend", "worker", "frontend"})
        print(json.dumps({"report": report, "leaked": leaked}))
        """
    )
    proc = _python(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["leaked"] == []
    result = out["report"]["measures"]["margin.output"]
    assert result["status"] == "ok" and isinstance(result["value"], float)
    assert out["report"]["data"]["name"] == "moons"


def test_the_engine_cli_runs_with_the_service_packages_absent(tmp_path: Path) -> None:
    proc = _python(_BLOCKER + _CONSOLE_ENTRY, "measures", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ids = {m["id"] for m in json.loads(proc.stdout)}
    assert "margin.output" in ids
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["serve"], "server"),
        (["users", "create", "alice"], "server"),
        (["worker"], "worker"),
        (["demo", "--exit"], "server"),  # the demo starts `genscope serve`: refused up front
    ],
)
def test_service_commands_without_the_service_name_the_extra(
    tmp_path: Path, args: list[str], extra: str
) -> None:
    proc = _python(_BLOCKER + _CONSOLE_ENTRY, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error [not_installed]"), proc.stderr
    assert f"pip install 'genscope[{extra}]'" in lines[0]


def test_a_command_whose_extra_is_missing_names_what_to_install(monkeypatch) -> None:
    import typer
    from typer.testing import CliRunner

    from genscope import command_plugins

    real = command_plugins.metadata.distribution

    def without_uvicorn(name: str):
        if name.lower() == "uvicorn":
            raise command_plugins.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(command_plugins.metadata, "distribution", without_uvicorn)
    app = typer.Typer()

    @app.command()
    def analyze() -> None:
        """An engine command (kept as it is)."""

    unavailable = command_plugins.add_plugin_commands(app)
    assert set(unavailable) == {"serve", "users"}  # the worker needs no uvicorn
    answer = CliRunner().invoke(app, ["serve", "--port", "1"])
    assert answer.exit_code == 2
    assert "missing uvicorn" in answer.output and "genscope[server]" in answer.output


def test_the_extras_split_the_service_from_the_engine() -> None:
    from importlib.metadata import requires

    from genscope.command_plugins import required_distributions

    engine = {line.split(";")[0] for line in requires("genscope") or [] if "extra ==" not in line}
    engine_names = {r.split(">")[0].split("<")[0].split("=")[0].strip() for r in engine}
    assert engine_names >= {"torch", "numpy", "safetensors", "typer", "rich"}
    assert not engine_names & {"fastapi", "uvicorn", "sqlalchemy", "celery", "jinja2", "plotly"}
    assert {"fastapi", "uvicorn", "sqlalchemy", "alembic", "jinja2", "plotly"} <= set(
        required_distributions("server")
    )
    assert {"celery", "redis", "sqlalchemy"} <= set(required_distributions("worker"))
    dev = set(required_distributions("dev"))
    assert set(required_distributions("server")) | set(required_distributions("worker")) <= dev
    assert "pytest" in dev


# --- the service's commands through the console entry ------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("serve", ["--host", "--port", "--no-worker"]),
        ("worker", ["--queues", "--concurrency", "--max-memory-per-child", "--pool"]),
        ("users", ["create", "token", "revoke", "list"]),
    ],
)
def test_service_commands_answer_through_the_console_entry(
    tmp_path: Path, command: str, expected: list[str]
) -> None:
    proc = _python(_CONSOLE_ENTRY, command, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for word in expected:
        assert word in proc.stdout, proc.stdout
