"""The engine imports nothing of the web, queue or database (ARCHITECTURE.md)."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "celery",
    "kombu",
    "redis",
    "psycopg",
    "plotly",
    "jinja2",
    "backend",
    "worker",
    "frontend",
)

SCRIPT = f"""
import importlib, pkgutil, sys
import genscope
for info in pkgutil.walk_packages(genscope.__path__, "genscope."):
    importlib.import_module(info.name)
from genscope.measures.registry import all_measures
all_measures()
bad = sorted({{m.split(".")[0] for m in sys.modules}} & set({FORBIDDEN!r}))
print(",".join(bad))
"""


def test_engine_modules_import_no_service_packages() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"the engine imported {out.stdout.strip()}"
