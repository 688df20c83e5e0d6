"""Typed errors with stable codes.

Every failure a user can cause (a bad file, a bad dataset, a bad parameter) is a
:class:`GenScopeError` subclass whose ``code`` is stable: the CLI prints it in one line, the
service maps it to an HTTP status in one table, the report stores it for a failed measure.
"""

from __future__ import annotations

from typing import Any


class GenScopeError(Exception):
    """Base of all user-facing errors: a stable ``code``, a readable message, optional detail."""

    code = "genscope_error"

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "detail": self.detail}


class BadCheckpoint(GenScopeError):
    """The checkpoint file is missing, truncated, corrupt or of an unknown format."""

    code = "bad_checkpoint"


class UnsafeCheckpoint(BadCheckpoint):
    """The file would need full unpickling (arbitrary code execution) to load, or is hostile in
    another way: a zip bomb, archive members whose names escape a folder, compiled code, a model
    that calls file operators."""

    code = "unsafe_checkpoint"


class WeightMismatch(BadCheckpoint):
    """A state dict does not fit the chosen architecture (missing/unexpected keys, shapes)."""

    code = "weight_mismatch"


class NonFiniteWeights(BadCheckpoint):
    """Some weights are NaN or infinite."""

    code = "non_finite_weights"


class BadArchitecture(GenScopeError):
    """Unknown zoo architecture or an invalid/absurd architecture config."""

    code = "bad_architecture"


class BadDataset(GenScopeError):
    """The dataset spec or file is invalid (shapes, dtypes, labels, non-finite values)."""

    code = "bad_dataset"


class ShapeMismatch(GenScopeError):
    """The data does not fit the model's input or output shape."""

    code = "shape_mismatch"


class UnknownMeasure(GenScopeError):
    """A measure id or group name that the registry does not know."""

    code = "unknown_measure"


class BadParameter(GenScopeError):
    """A measure parameter that is unknown, of the wrong type or out of range."""

    code = "bad_parameter"


class UnsupportedModel(GenScopeError):
    """The model cannot be analysed by this measure (format, architecture, size)."""

    code = "unsupported_model"
