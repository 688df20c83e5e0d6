"""Checkpoint files written by the tests, in every supported format."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn


class PlantsFile:
    """Unpickling this object would create ``path``: the tests check that it never appears."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


def export_pt2(model: nn.Module, example: torch.Tensor, path: Path, dynamic: bool = True) -> Path:
    shapes = ({0: torch.export.Dim.AUTO},) if dynamic else None
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def script_pt(model: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(model.eval()), str(path))
    return path


def save_state_dict(
    model: nn.Module, path: Path, wrap: str | None = None, prefix: str = ""
) -> Path:
    state = {prefix + k: v for k, v in model.state_dict().items()}
    obj: object = state if wrap is None else {wrap: state, "epoch": 7, "best_acc": 0.9}
    torch.save(obj, path)
    return path


def save_safetensors(model: nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def poison_pt2(clean: Path, out: Path, marker: Path) -> Path:
    """A copy of ``clean`` whose first weight is a pickle that would create ``marker``."""
    payload = Path(str(out) + ".payload")
    torch.save(PlantsFile(str(marker)), payload)
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"].values()))
                first["use_pickle"] = True
                data = json.dumps(config).encode()
            elif info.filename.endswith("weights/weight_0"):
                data = payload.read_bytes()
            dst.writestr(info, data)
    payload.unlink()
    return out
