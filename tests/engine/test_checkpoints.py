"""Checkpoint loading: every format gives the original logits; bad files get clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genscope.errors import (
    BadCheckpoint,
    NonFiniteWeights,
    UnsafeCheckpoint,
    WeightMismatch,
)
from genscope.io.checkpoints import (
    FORMAT_EXPORT,
    FORMAT_SAFETENSORS,
    FORMAT_STATE_DICT,
    FORMAT_TORCHSCRIPT,
    detect_format,
    load_checkpoint,
)
from genscope.io.zoo import build_model
from tests.engine.helpers import (
    PlantsFile,
    export_pt2,
    poison_pt2,
    save_safetensors,
    save_state_dict,
    script_pt,
)

MLP = {"input_dim": 64, "widths": [32, 16], "num_classes": 10}
RESNET = {"depth": 20, "in_channels": 1, "input_size": 8, "num_classes": 10}


@pytest.fixture()
def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", MLP).eval()


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_export_program_gives_original_logits(tmp_path: Path, mlp, x) -> None:
    path = export_pt2(mlp, x, tmp_path / "m.pt2")
    loaded = load_checkpoint(path)
    assert loaded.format == FORMAT_EXPORT and loaded.static_batch_size is None
    torch.testing.assert_close(logits(loaded.module, x), logits(mlp, x))
    assert loaded.num_params == sum(p.numel() for p in mlp.parameters())


def test_static_batch_export_accepts_any_batch(tmp_path: Path, mlp, x) -> None:
    path = export_pt2(mlp, x[:2], tmp_path / "static.pt2", dynamic=False)
    loaded = load_checkpoint(path)
    assert loaded.static_batch_size == 2
    torch.testing.assert_close(logits(loaded.module, x), logits(mlp, x))
    params = {k: v.detach() for k, v in loaded.module.named_parameters()}
    out = torch.func.functional_call(loaded.module, params, (x,))
    torch.testing.assert_close(out, logits(mlp, x))


def test_torchscript_is_recognised_and_refused(tmp_path: Path, mlp) -> None:
    """TorchScript is a program whose code runs while it loads: refused, with how to export."""
    path = script_pt(mlp, tmp_path / "m_script.pt")
    assert detect_format(path) == FORMAT_TORCHSCRIPT
    with pytest.raises(UnsafeCheckpoint, match="torch.export.export"):
        load_checkpoint(path)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model", "net"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_state_dict_unwrapped(tmp_path: Path, mlp, x, wrap: str | None, prefix: str) -> None:
    path = save_state_dict(mlp, tmp_path / "w.pth", wrap=wrap, prefix=prefix)
    loaded = load_checkpoint(path, arch="mlp", arch_config=MLP)
    assert loaded.format == FORMAT_STATE_DICT
    torch.testing.assert_close(logits(loaded.module, x), logits(mlp, x))
    notes = " ".join(loaded.unwrapped)
    if wrap:
        assert repr(wrap) in notes and "ignored non-tensor entries" in notes
    if prefix:
        assert "'module.'" in notes
    if not wrap and not prefix:
        assert loaded.unwrapped == []


def test_safetensors_zoo_resnet20(tmp_path: Path, x) -> None:
    torch.manual_seed(3)
    net = build_model("resnet", RESNET).eval()
    path = save_safetensors(net, tmp_path / "r20.safetensors")
    loaded = load_checkpoint(path, arch="resnet", arch_config=RESNET)
    assert loaded.format == FORMAT_SAFETENSORS
    torch.testing.assert_close(logits(loaded.module, x), logits(net, x))


def test_weights_without_arch_are_refused_with_the_choices(tmp_path: Path, mlp) -> None:
    path = save_safetensors(mlp, tmp_path / "w.safetensors")
    with pytest.raises(BadCheckpoint, match=r"--arch .*mlp.*resnet"):
        load_checkpoint(path)


def test_pickled_module_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": PlantsFile(str(marker))}, path)
    with pytest.raises(UnsafeCheckpoint, match=r"full unpickling.*torch\.export"):
        load_checkpoint(path, arch="mlp", arch_config=MLP)
    assert not marker.exists()


def test_whole_module_pickle_is_refused(tmp_path: Path, mlp) -> None:
    path = tmp_path / "module.pt"
    torch.save(mlp, path)
    with pytest.raises(UnsafeCheckpoint, match="needs full unpickling"):
        load_checkpoint(path, arch="mlp", arch_config=MLP)


def test_poisoned_export_archive_is_refused_and_never_unpickled(tmp_path: Path, mlp, x) -> None:
    clean = export_pt2(mlp, x, tmp_path / "clean.pt2")
    marker = tmp_path / "pwned"
    evil = poison_pt2(clean, tmp_path / "evil.pt2", marker)
    with pytest.raises(UnsafeCheckpoint, match="pickled objects"):
        load_checkpoint(evil)
    assert not marker.exists()
    assert torch.load is not None and load_checkpoint(clean).format == FORMAT_EXPORT


def test_shape_mismatch_and_missing_keys_are_listed(tmp_path: Path, mlp) -> None:
    path = save_state_dict(mlp, tmp_path / "w.pt")
    wider = dict(MLP, widths=[48, 16])
    with pytest.raises(WeightMismatch) as info:
        load_checkpoint(path, arch="mlp", arch_config=wider)
    assert "shape mismatches" in info.value.message and "(48, 64)" in info.value.message
    deeper = dict(MLP, widths=[32, 16, 16])
    with pytest.raises(WeightMismatch) as info:
        load_checkpoint(path, arch="mlp", arch_config=deeper)
    assert "missing keys" in info.value.message
    assert info.value.detail["missing"]


def test_unexpected_keys_are_listed(tmp_path: Path, mlp) -> None:
    state = dict(mlp.state_dict(), **{"extra.weight": torch.zeros(3)})
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightMismatch, match=r"unexpected keys \[extra.weight\]"):
        load_checkpoint(tmp_path / "w.pt", arch="mlp", arch_config=MLP)


def test_non_finite_weights_are_named(tmp_path: Path, mlp) -> None:
    state = mlp.state_dict()
    name = next(iter(state))
    state[name] = state[name].clone()
    state[name][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(NonFiniteWeights, match=name):
        load_checkpoint(tmp_path / "nan.pt", arch="mlp", arch_config=MLP)


@pytest.mark.parametrize("maker", ["pt2", "script", "state", "safetensors"])
def test_truncated_files_give_a_one_line_error(tmp_path: Path, mlp, x, maker: str) -> None:
    writers = {
        "pt2": lambda p: export_pt2(mlp, x, p.with_suffix(".pt2")),
        "script": lambda p: script_pt(mlp, p.with_suffix(".pt")),
        "state": lambda p: save_state_dict(mlp, p.with_suffix(".pt")),
        "safetensors": lambda p: save_safetensors(mlp, p.with_suffix(".safetensors")),
    }
    path = writers[maker](tmp_path / "m")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadCheckpoint) as info:
        load_checkpoint(path, arch="mlp", arch_config=MLP)
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"\x89PNG\r\n\x1a\n" + b"0" * 64, "not a checkpoint"), (b"hello", "not a")],
)
def test_wrong_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(BadCheckpoint, match=message):
        detect_format(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadCheckpoint, match="not found"):
        load_checkpoint(tmp_path / "nope.pt2")
