"""One analysis as a process: ``python -m genscope.job SPEC.json``.

The service runs the loading and computation of a run in this entry point, inside its sandbox,
so that the process that reads a user's checkpoint has neither the database nor the network.
It imports nothing of the service. The spec (JSON object):

* ``checkpoint``, ``arch``, ``arch_config``: what :func:`genscope.io.checkpoints.load_checkpoint`
  takes;
* ``data``: a ``--data`` spec (``digits``, ``npz:PATH``...);
* ``measures`` (ids), ``params`` (``{id: {name: value}}``, already resolved), ``options``
  (:class:`~genscope.measures.context.AnalysisOptions` fields), ``torch_threads`` (0: torch's
  default);
* ``out``: where to write the report (``Report.to_dict()``, schema ``genscope.report/1``).

Standard output carries one JSON object per line and nothing else (anything the engine prints
goes to standard error): ``{"progress": fraction, "message": text}`` while it runs, then
``{"done": out}``, or ``{"error": {"code", "message"}}`` with exit status 2 for an engine error
(:class:`~genscope.errors.GenScopeError`) and 1 for any other exception (code
``analysis_failed``, message ``Type: text``).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import IO, Any


def _emit(stream: IO[str], obj: dict[str, Any]) -> None:
    stream.write(json.dumps(obj, allow_nan=False) + "\n")
    stream.flush()


def run(spec: dict[str, Any], stream: IO[str]) -> int:
    """Load, analyse and write the report; returns the exit status."""
    from genscope.errors import GenScopeError

    try:
        import torch

        threads = int(spec.get("torch_threads") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        from genscope import analyze
        from genscope.io.checkpoints import load_checkpoint
        from genscope.measures.context import AnalysisOptions

        _emit(stream, {"progress": 0.0, "message": "loading"})
        model = load_checkpoint(
            Path(spec["checkpoint"]), arch=spec.get("arch"), arch_config=spec.get("arch_config")
        )
        report = analyze(
            model,
            spec["data"],
            measures=list(spec["measures"]),
            params=dict(spec.get("params") or {}),
            options=AnalysisOptions(**dict(spec.get("options") or {})),
            progress=lambda f, m: _emit(stream, {"progress": float(f), "message": str(m)}),
        )
        out = Path(spec["out"])
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report.to_dict()), encoding="utf-8")
        os.replace(tmp, out)
    except GenScopeError as exc:
        _emit(stream, {"error": {"code": exc.code, "message": exc.message}})
        return 2
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        _emit(
            stream,
            {"error": {"code": "analysis_failed", "message": f"{type(exc).__name__}: {exc}"}},
        )
        return 1
    _emit(stream, {"done": str(out)})
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m genscope.job SPEC.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m genscope.job SPEC.json", file=sys.stderr)
        return 64
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    # The protocol owns the real stdout; stray prints of the engine go to stderr.
    stream = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return run(spec, stream)


if __name__ == "__main__":
    sys.exit(main())
