"""Datasets: built-ins, uploaded arrays, and every check on labels, shapes and values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from genscope.errors import BadDataset
from genscope.io.datasets import load_dataset


def test_digits_split_is_fixed_and_stratified() -> None:
    data = load_dataset("digits")
    assert (data.n_train, data.n_test, data.num_classes) == (1437, 360, 10)
    assert data.input_shape == (1, 8, 8)
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0
    counts = torch.bincount(data.y_test, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # stratified 20% of ~180 each
    assert load_dataset("digits").sha256 == data.sha256


@pytest.mark.parametrize(("name", "classes"), [("moons", 2), ("blobs", 3), ("linear", 2)])
def test_synthetic_sets_are_seeded(name: str, classes: int) -> None:
    a, b = load_dataset(name), load_dataset(name)
    assert a.num_classes == classes and a.input_shape == (2,)
    assert a.sha256 == b.sha256 and a.n_train == 600 and a.n_test == 200


def test_linear_set_is_separable_with_a_gap() -> None:
    data = load_dataset("linear")
    signed = (data.x_train[:, 1] - data.x_train[:, 0]) / 2**0.5
    assert bool(((signed > 0) == (data.y_train == 1)).all())
    assert float(signed.abs().min()) >= 0.1 - 1e-6


def _arrays(n: int = 20, d: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.normal(size=(n, d)).astype(np.float32),
        "y_train": rng.integers(0, 4, size=n),
        "x_test": rng.normal(size=(8, d)).astype(np.float32),
        "y_test": rng.integers(0, 4, size=8),
    }


def test_npz_and_safetensors_round_trip(tmp_path: Path) -> None:
    arrays = _arrays()
    np.savez(tmp_path / "d.npz", **arrays)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp_path / "d.safetensors")
    )
    a = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    b = load_dataset(f"safetensors:{tmp_path / 'd.safetensors'}")
    assert a.sha256 == b.sha256
    assert a.n_train == 20 and a.n_test == 8
    assert torch.equal(a.y_train, torch.from_numpy(arrays["y_train"]))


def test_test_split_is_optional(tmp_path: Path) -> None:
    arrays = _arrays()
    np.savez(tmp_path / "d.npz", x_train=arrays["x_train"], y_train=arrays["y_train"])
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert data.n_test == 0 and data.x_test is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_train": np.full(20, 1.5)}, "integer class labels"),
        ({"y_train": -np.ones(20, dtype=np.int64)}, "negative labels"),
        ({"y_train": np.zeros(19, dtype=np.int64)}, "20 examples but y_train has 19"),
        ({"x_train": np.full((20, 3), np.nan, dtype=np.float32)}, "non-finite"),
        ({"x_train": np.array(["a"] * 20)}, "must hold numbers"),
        ({"x_test": np.zeros((8, 5), dtype=np.float32)}, r"shape \(5,\) but x_train"),
        ({"y_train": np.full(20, 10**6)}, "classes is more than"),
    ],
)
def test_bad_arrays_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    arrays = dict(_arrays(), **change)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(BadDataset, match=message):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    arrays = _arrays()
    arrays["x_train"] = np.array([object()] * 20, dtype=object)
    np.savez(tmp_path / "obj.npz", **arrays)
    with pytest.raises(BadDataset, match="unpickling"):
        load_dataset(f"npz:{tmp_path / 'obj.npz'}")


def test_missing_arrays_and_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x_train=np.zeros((3, 2)))
    with pytest.raises(BadDataset, match="'y_train' is missing"):
        load_dataset(f"npz:{tmp_path / 'x.npz'}")
    with pytest.raises(BadDataset, match="not found"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BadDataset, match="not a readable npz"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")


def test_unknown_spec_lists_the_choices() -> None:
    with pytest.raises(BadDataset, match="digits.*npz:PATH"):
        load_dataset("imagenet-21k")


def test_torchvision_sets_fail_clearly_when_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BadDataset, match="cifar10"):
        load_dataset("cifar10", data_dir=tmp_path)
