"""Datasets: built-in sets, uploaded arrays, torchvision sets (interfaces.md §1, ``--data SPEC``).

Every dataset becomes a :class:`Dataset` of CPU tensors, checked once: float inputs with finite
values, integer labels in ``[0, num_classes)``, matching lengths. Training-set order is the order
of the arrays; per-example outputs follow it.

Uploaded files are hostile until checked. Before any array is read: ``.npz`` archives pass
:func:`genscope.io.archives.check_zip` (zip bombs, traversal names), every ``.npy`` header is
parsed on its own and refused when its dtype holds Python objects (never unpickled:
``allow_pickle=False``) or its shape needs more bytes than the member holds; safetensors headers
are validated by the safetensors library. Then the memory the tensors will take (float32 inputs,
int64 labels) is bounded by :func:`genscope.io.archives.max_unpacked_bytes`, and labels are
bounded by :data:`MAX_CLASSES` (no one-hot is ever built).
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genscope.errors import BadDataset
from genscope.io.archives import ArchiveError, check_zip, first_line, max_unpacked_bytes
from genscope.io.dataset_names import BUILTIN_DATASETS, SYNTHETIC_DATASETS, TORCHVISION_DATASETS

BUILTIN = tuple(BUILTIN_DATASETS)
TORCHVISION = TORCHVISION_DATASETS
MAX_CLASSES = 100_000
MAX_ELEMENTS = 2_000_000_000  # per array; refuses absurd headers before allocation
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test", "num_classes")


@dataclass
class Dataset:
    """Train (and optional test) tensors with their class count and a content hash."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    num_classes: int
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = content_sha256(self.x_train, self.y_train, self.x_test, self.y_test)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return 0 if self.x_test is None else int(self.x_test.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
        }


def content_sha256(*tensors: torch.Tensor | None) -> str:
    """sha256 over dtype, shape and bytes of each tensor (None counts as absent)."""
    digest = hashlib.sha256()
    for t in tensors:
        if t is None:
            digest.update(b"none;")
            continue
        arr = t.detach().cpu().contiguous().numpy()
        digest.update(f"{arr.dtype.str}{arr.shape};".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def from_arrays(
    name: str,
    x_train: Any,
    y_train: Any,
    x_test: Any = None,
    y_test: Any = None,
    num_classes: int | None = None,
) -> Dataset:
    """Validate arrays and build a :class:`Dataset` (float32 inputs, int64 labels)."""
    xtr, ytr = _check_pair("train", x_train, y_train)
    if (x_test is None) != (y_test is None):
        raise BadDataset(f"{name}: x_test and y_test must be given together")
    xte = yte = None
    if x_test is not None:
        xte, yte = _check_pair("test", x_test, y_test)
        if tuple(xte.shape[1:]) != tuple(xtr.shape[1:]):
            raise BadDataset(
                f"{name}: x_test examples have shape {tuple(xte.shape[1:])} but x_train examples "
                f"have shape {tuple(xtr.shape[1:])}"
            )
    max_label = int(ytr.max()) if ytr.numel() else -1
    if yte is not None and yte.numel():
        max_label = max(max_label, int(yte.max()))
    classes = num_classes if num_classes is not None else max_label + 1
    if classes > MAX_CLASSES:
        raise BadDataset(f"{name}: {classes} classes is more than the {MAX_CLASSES} supported")
    if max_label >= classes:
        raise BadDataset(f"{name}: label {max_label} is out of range for {classes} classes")
    if classes < 2:
        raise BadDataset(f"{name}: a classification dataset needs at least 2 classes")
    return Dataset(name, xtr, ytr, xte, yte, classes)


def _check_pair(split: str, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    xa = np.asarray(x) if not isinstance(x, torch.Tensor) else x.detach().cpu().numpy()
    ya = np.asarray(y) if not isinstance(y, torch.Tensor) else y.detach().cpu().numpy()
    if xa.dtype.kind not in "fiu" or xa.dtype == np.bool_:
        raise BadDataset(f"x_{split} must hold numbers, got dtype {xa.dtype}")
    if ya.dtype.kind not in "iu":
        if (
            ya.dtype.kind == "f"
            and ya.size
            and np.all(np.isfinite(ya))
            and np.all(ya == np.round(ya))
        ):
            pass  # integral floats are accepted as labels
        else:
            raise BadDataset(f"y_{split} must hold integer class labels, got dtype {ya.dtype}")
    if xa.ndim < 2:
        raise BadDataset(
            f"x_{split} must have shape (n, ...) with one row per example, got shape {xa.shape}"
        )
    if ya.ndim != 1:
        raise BadDataset(f"y_{split} must have shape (n,), got shape {ya.shape}")
    if xa.shape[0] != ya.shape[0]:
        raise BadDataset(
            f"x_{split} has {xa.shape[0]} examples but y_{split} has {ya.shape[0]} labels"
        )
    if xa.shape[0] == 0:
        raise BadDataset(f"the {split} split is empty")
    if math.prod(xa.shape[1:]) == 0:
        raise BadDataset(f"x_{split} examples have no features (shape {xa.shape})")
    xt = torch.from_numpy(np.ascontiguousarray(xa, dtype=np.float32))
    bad = ~torch.isfinite(xt)
    if bool(bad.any()):
        rows = torch.nonzero(bad.flatten(1).any(dim=1)).flatten()[:5].tolist()
        raise BadDataset(
            f"x_{split} has non-finite values (NaN or inf) in {int(bad.flatten(1).any(1).sum())} "
            f"examples, e.g. rows {rows}"
        )
    yt = torch.from_numpy(np.ascontiguousarray(ya).astype(np.int64))
    if int(yt.min()) < 0:
        raise BadDataset(f"y_{split} has negative labels (min {int(yt.min())})")
    return xt, yt


def load_dataset(spec: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Resolve a ``--data`` spec: a built-in name, ``npz:PATH``, ``safetensors:PATH``, or a
    torchvision set name."""
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    if sep and kind in {"npz", "safetensors"}:
        return load_array_file(Path(rest), kind)
    if spec == "digits":
        return digits()
    if spec in SYNTHETIC_DATASETS:
        return synthetic(spec)
    if spec in TORCHVISION:
        return torchvision_set(spec, data_dir)
    path = Path(spec)
    if path.suffix in {".npz", ".safetensors"} and path.exists():
        return load_array_file(path, path.suffix[1:])
    raise BadDataset(
        f"unknown dataset {spec!r}: use one of {', '.join(BUILTIN + TORCHVISION)}, "
        "npz:PATH or safetensors:PATH"
    )


def digits() -> Dataset:
    """scikit-learn's 8x8 digits: stratified 80/20 split (seed 0), 1x8x8 images in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return from_arrays("digits", x_tr, y_tr, x_te, y_te, num_classes=10)


def synthetic(name: str, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Dataset:
    """Low-dimensional sets with a fixed seed, the cases of max-margin theory.

    ``moons``: two interleaved half circles (noise 0.15); ``blobs``: three Gaussian blobs in 2-D;
    ``linear``: two classes in 2-D separated by the line x1 = x0 with a gap of 0.2.
    """
    from sklearn.datasets import make_blobs, make_moons

    n = n_train + n_test
    if name == "moons":
        x, y = make_moons(n_samples=n, noise=0.15, random_state=seed)
    elif name == "blobs":
        x, y = make_blobs(n_samples=n, centers=3, n_features=2, cluster_std=1.0, random_state=seed)
    elif name == "linear":
        rng = np.random.default_rng(seed)
        x = rng.uniform(-1.0, 1.0, size=(4 * n, 2))
        signed = (x[:, 1] - x[:, 0]) / np.sqrt(2.0)
        keep = np.abs(signed) >= 0.1
        x = x[keep][:n]
        y = (signed[keep][:n] > 0).astype(np.int64)
    else:
        raise BadDataset(f"unknown synthetic dataset {name!r}")
    x = x.astype(np.float32)
    return from_arrays(name, x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def load_array_file(path: Path, kind: str) -> Dataset:
    """Arrays ``x_train``, ``y_train`` and optional ``x_test``, ``y_test`` from npz/safetensors."""
    if not path.is_file():
        raise BadDataset(f"dataset file not found: {path}")
    try:
        arrays = _read_npz(path) if kind == "npz" else _read_safetensors(path)
        for key in ("x_train", "y_train"):
            if key not in arrays:
                raise BadDataset(
                    f"{path.name}: array {key!r} is missing "
                    f"(found: {', '.join(sorted(arrays)) or 'none'})"
                )
        return from_arrays(
            path.stem,
            arrays["x_train"],
            arrays["y_train"],
            arrays.get("x_test"),
            arrays.get("y_test"),
            num_classes=_num_classes(path.name, arrays.get("num_classes")),
        )
    except MemoryError:
        raise BadDataset(f"{path.name}: the arrays need more memory than is available") from None


def _num_classes(name: str, raw: Any) -> int | None:
    """The optional ``num_classes`` array: one integer in ``[2, MAX_CLASSES]``."""
    if raw is None:
        return None
    arr = np.asarray(raw)
    if arr.size != 1 or arr.dtype.kind not in "iu":
        raise BadDataset(
            f"{name}: num_classes must be a single integer, got dtype {arr.dtype} shape {arr.shape}"
        )
    value = int(arr.reshape(()))
    if not 2 <= value <= MAX_CLASSES:
        raise BadDataset(f"{name}: num_classes must be in [2, {MAX_CLASSES}], got {value}")
    return value


def _check_budget(name: str, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse arrays whose tensors (float32 inputs, int64 labels) would not fit the limit."""
    limit = max_unpacked_bytes()
    total = 0
    for key, shape in shapes.items():
        count = math.prod(shape)
        if count > MAX_ELEMENTS:
            raise BadDataset(
                f"{name}: array {key!r} has {count} elements, more than {MAX_ELEMENTS}",
                {"array": key, "shape": list(shape)},
            )
        total += count * (8 if key.startswith("y") else 4)
    if total > limit:
        raise BadDataset(
            f"{name}: the arrays would take {total} bytes in memory, more than the limit of "
            f"{limit} (GENSCOPE_MAX_UNPACKED_MB)"
        )


def _npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version in ((2, 0), (3, 0)):
        return np.lib.format.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy version {version}")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """An npz archive's arrays, each header checked against the bytes the member holds."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise BadDataset(f"{path.name}: not a readable npz file (not a zip archive)")
    try:
        check_zip(path)
        with zipfile.ZipFile(path) as zf:
            shapes: dict[str, tuple[int, ...]] = {}
            keys: set[str] = set()
            # every member, whatever its name: np.load serves "x" as well as "x.npy" under key
            # "x", and reads any member that starts with the .npy magic as an array
            for info in zf.infolist():
                name = info.filename
                key = name[:-4] if name.endswith(".npy") else name
                if key in keys:
                    raise BadDataset(
                        f"{path.name}: two members give array {key!r}; refused",
                        {"array": key},
                    )
                keys.add(key)
                with zf.open(info) as member:
                    if member.read(6) != b"\x93NUMPY":
                        raise BadDataset(
                            f"{path.name}: member {name!r} is not a .npy array; an npz file "
                            "holds arrays only (numpy.savez)",
                            {"member": name},
                        )
                with zf.open(info) as member:
                    shape, _fortran, dtype = _npy_header(member)
                    offset = member.tell()
                if dtype.hasobject:
                    raise BadDataset(
                        f"{path.name}: array {key!r} holds Python objects, which need unpickling "
                        "and are refused; save plain numeric arrays"
                    )
                needed = math.prod(shape) * dtype.itemsize
                if needed > info.file_size - offset:
                    raise BadDataset(
                        f"{path.name}: array {key!r} declares shape {tuple(shape)} of {dtype} "
                        f"({needed} bytes) but holds {max(info.file_size - offset, 0)} bytes",
                        {"array": key, "shape": list(shape)},
                    )
                if key in ARRAY_KEYS:
                    shapes[key] = tuple(shape)
        _check_budget(path.name, shapes)
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files if key in ARRAY_KEYS}
    except BadDataset:
        raise
    except ArchiveError as exc:
        raise BadDataset(str(exc)) from None
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise BadDataset(
                f"{path.name}: arrays of Python objects need unpickling and are refused; "
                "save plain numeric arrays"
            ) from None
        raise BadDataset(f"{path.name}: not a readable npz file ({first_line(exc)})") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, TypeError, SyntaxError) as exc:
        raise BadDataset(f"{path.name}: not a readable npz file ({first_line(exc)})") from None


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file's arrays; the library validates header, offsets and shapes."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as fh:
            keys = [k for k in fh.keys() if k in ARRAY_KEYS]  # noqa: SIM118 (not a dict)
            _check_budget(path.name, {k: tuple(fh.get_slice(k).get_shape()) for k in keys})
            return {k: fh.get_tensor(k) for k in keys}
    except (BadDataset, MemoryError):
        raise
    except Exception as exc:  # also dtypes numpy lacks (F8_*: AttributeError)
        raise BadDataset(
            f"{path.name}: not a readable safetensors file ({first_line(exc)})"
        ) from None


def torchvision_set(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """A torchvision dataset from ``data_dir`` (or ``$GENSCOPE_DATA_DIR/datasets``), no download
    unless ``GENSCOPE_DOWNLOAD=1``; a clear error when torchvision or the files are missing."""
    try:
        import torchvision  # noqa: F401
        from torchvision import datasets as tvd
    except Exception as exc:  # torchvision missing or broken beside this torch
        raise BadDataset(
            f"dataset {name!r} needs torchvision, which is not installed or does not import "
            f"({type(exc).__name__}); use npz:PATH with the arrays instead"
        ) from None
    root = Path(data_dir or os.environ.get("GENSCOPE_DATA_DIR", "~/.genscope")).expanduser()
    root = root / "datasets"
    download = os.environ.get("GENSCOPE_DOWNLOAD", "0") == "1"
    classes = {"mnist": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100, "svhn": 10}
    try:
        if name == "svhn":
            train = tvd.SVHN(str(root), split="train", download=download)
            test = tvd.SVHN(str(root), split="test", download=download)
            x_tr, y_tr = train.data.astype(np.float32) / 255.0, train.labels
            x_te, y_te = test.data.astype(np.float32) / 255.0, test.labels
        else:
            cls = {
                "mnist": tvd.MNIST,
                "fashion-mnist": tvd.FashionMNIST,
                "cifar10": tvd.CIFAR10,
                "cifar100": tvd.CIFAR100,
            }[name]
            train = cls(str(root), train=True, download=download)
            test = cls(str(root), train=False, download=download)
            x_tr, y_tr = _tv_arrays(train.data), np.asarray(train.targets)
            x_te, y_te = _tv_arrays(test.data), np.asarray(test.targets)
    except (RuntimeError, OSError) as exc:
        raise BadDataset(
            f"dataset {name!r} is not present under {root} ({exc}); place the files there or "
            "set GENSCOPE_DOWNLOAD=1 where the network allows it"
        ) from None
    return from_arrays(name, x_tr, y_tr, x_te, y_te, num_classes=classes[name])


def _tv_arrays(data: Any) -> np.ndarray:
    arr = np.asarray(data, dtype=np.float32) / 255.0
    if arr.ndim == 3:  # N, H, W (MNIST)
        return arr[:, None]
    return np.transpose(arr, (0, 3, 1, 2))  # N, H, W, C (CIFAR) -> N, C, H, W
