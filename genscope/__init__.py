"""GenScope: generalization diagnostics for deep networks.

The engine is plain PyTorch: ``genscope.analyze(model, data, measures)`` returns a
:class:`~genscope.report.Report`. It imports nothing of the web, queue or database.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genscope.analysis import analyze as analyze

__all__ = ["__version__", "analyze"]


def __getattr__(name: str) -> Any:
    if name == "analyze":
        from genscope.analysis import analyze

        return analyze
    raise AttributeError(name)
