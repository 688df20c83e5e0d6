"""Checkpoint loading without ever running code from the file (interfaces.md §1).

The formats, how each is recognised and which loader reads it are records of the registry in
:mod:`genscope.io.formats`; this module holds the loaders of the built-in ones and what every
load does (architecture, weight checks, finiteness, eval mode). The built-in formats:

* ``torch.export`` programs (``.pt2``): ``torch.export.load(...).module()``. torch's own loader
  falls back to full unpickling for some archive members; here every unpickling call made while
  loading is forced through the weights-only unpickler, and plain ``pickle`` is refused.
* weights + a zoo architecture: ``.safetensors``, or a state dict saved with ``torch.save`` and
  read with ``torch.load(weights_only=True)``. Training checkpoints are unwrapped
  (``state_dict``/``model``/``net`` keys, ``module.``/``_orig_mod.`` prefixes).
* TorchScript archives are recognised and refused: they are programs whose code runs while they
  load (``__setstate__``) and when they run, and no check of their code short of interpreting it
  can tell what it does. The error says how to export the model instead.

A file that would need full unpickling (a pickled ``nn.Module``, arbitrary objects) is refused
with :class:`~genscope.errors.UnsafeCheckpoint` and is never unpickled.

Defences before any torch reader sees the bytes (hostile uploads):

* every zip archive passes :func:`genscope.io.archives.check_zip` (traversal names, zip bombs,
  encrypted or oddly compressed members); nothing is ever extracted to disk;
* pickles inside archives are checked against torch's weights-only list (``torch.save``
  archives and the pickled members of ``.pt2`` archives); raw pickles inside ``.pt2`` archives
  are refused;
* ``.pt2`` archives holding AOTInductor members (compiled shared libraries that
  ``torch.export.load`` would load) are refused; the program itself passes the allow-lists of
  :mod:`genscope.io.export_check` before torch reads it (every operator a pure tensor operator,
  no operator-valued arguments, symbolic expressions and guards in a small grammar), and its
  loaded graphs are checked again;
* weights-only files are checked against the architecture on the meta device (keys, shapes,
  dtypes) before the real model is allocated, so a tiny file naming a huge architecture
  allocates nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
import re
import threading
import types
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genscope.errors import (
    BadCheckpoint,
    GenScopeError,
    NonFiniteWeights,
    UnsafeCheckpoint,
    WeightMismatch,
)
from genscope.io.archives import (
    ArchiveError,
    check_zip,
    first_line,
    read_member,
    scan_pickle,
    weights_global,
)
from genscope.io.export_check import ProgramRefused, check_graph, check_program_json
from genscope.io.formats import (
    EXPORT_HINT,
    FORMAT_EXPORT,
    FORMAT_SAFETENSORS,
    FORMAT_STATE_DICT,
    FORMAT_TORCHSCRIPT,
    CheckpointFormat,
    Contents,
    detect,
    format_named,
)

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "weights")
STRIP_PREFIXES = ("module.", "_orig_mod.", "model.")
MAX_PICKLE_BYTES = 64 << 20  # a data.pkl larger than this is not a real model's
MAX_CODE_BYTES = 16 << 20  # likewise for a .pt2 archive's JSON members


@dataclass
class LoadedModel:
    """A model ready for analysis, with where it came from and what loading did to it."""

    module: nn.Module
    format: str
    sha256: str
    path: str | None = None
    arch: str | None = None
    arch_config: dict[str, Any] | None = None
    unwrapped: list[str] = field(default_factory=list)
    static_batch_size: int | None = None

    @property
    def functional(self) -> bool:
        """Whether ``torch.func.functional_call`` works (everything but TorchScript)."""
        record = format_named(self.format)
        return record.functional if record is not None else True

    @property
    def form(self) -> str:
        """The form it arrived in, as measures declare them (``registry.FORMS``): the format
        record's (``program`` for a ``torch.export`` program, ``state_dict`` for weights with an
        architecture), else ``module`` (a module handed over in Python)."""
        record = format_named(self.format)
        return record.form if record is not None else "module"

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "form": self.form,
            "sha256": self.sha256,
            "num_params": self.num_params,
            "arch": self.arch,
            "arch_config": self.arch_config,
            "unwrapped": list(self.unwrapped),
            "static_batch_size": self.static_batch_size,
        }


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path: str | Path) -> str:
    """The name of the file's format, recognised from its bytes by the format registry
    (:func:`genscope.io.formats.detect`).

    Raises:
        BadCheckpoint: empty, unreadable, truncated, or of no known format.
        UnsafeCheckpoint: a hostile archive (zip bomb, member names that escape a folder,
            encrypted members, compiled code); see :func:`genscope.io.archives.check_zip`.
    """
    return detect(path).name


def load_checkpoint(
    path: str | Path,
    arch: str | None = None,
    arch_config: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Load a checkpoint safely and return the model in eval mode on the CPU.

    Args:
        path: the checkpoint file.
        arch: zoo architecture name; needed for weights-only formats.
        arch_config: the architecture's JSON config (validated by the zoo).

    Raises:
        BadCheckpoint (and subclasses): with a one-line message a user can act on.
    """
    path = Path(path)
    fmt = detect(path)
    sha = file_sha256(path)
    try:
        loaded = _load(path, fmt, sha, arch, arch_config)
    except MemoryError:
        raise BadCheckpoint(
            f"{path.name}: loading needs more memory than is available; refused"
        ) from None
    check_finite(loaded.module, path.name)
    set_eval(loaded.module)
    return loaded


def _load(
    path: Path,
    fmt: CheckpointFormat,
    sha: str,
    arch: str | None,
    arch_config: Mapping[str, Any] | None,
) -> LoadedModel:
    if fmt.refusal is not None:
        raise UnsafeCheckpoint(fmt.refusal.format(name=path.name), {"format": fmt.name})
    contents = fmt.load(path)
    if not fmt.needs_arch:
        return LoadedModel(
            contents.module, fmt.name, sha, str(path), static_batch_size=contents.static_batch_size
        )
    if contents.tensors is None:  # pragma: no cover - a loader that breaks its format's contract
        raise AssertionError(f"the {fmt.name} loader returned no tensors")
    if arch is None:
        from genscope.io.zoo import ARCH_NAMES

        raise BadCheckpoint(
            f"{path.name} holds weights only: name the architecture with --arch "
            f"(one of {', '.join(ARCH_NAMES)}) and --arch-config, or export the model "
            "to .pt2 with torch.export.save"
        )
    return load_into_architecture(
        path, fmt.name, sha, contents.tensors, contents.notes, arch, arch_config
    )


def load_into_architecture(
    path: Path,
    format_name: str,
    sha: str,
    state: Mapping[str, torch.Tensor],
    notes: list[str],
    arch: str,
    arch_config: Mapping[str, Any] | None,
) -> LoadedModel:
    """Build the zoo architecture and load ``state`` into it, after checking the tensors against
    the architecture on the meta device (a file that does not fit is refused before the real,
    possibly large, model is allocated)."""
    from genscope.io.zoo import build_model, validate_config

    config = validate_config(arch, dict(arch_config or {}))
    with torch.device("meta"):
        skeleton = build_model(arch, config)
    check_weights(skeleton.state_dict(), state, path.name)
    module = build_model(arch, config)
    load_weights(module, state, path.name)
    return LoadedModel(module, format_name, sha, str(path), arch, config, list(notes))


# --- loaders of the built-in formats (records in genscope.io.formats) -------------------------


def read_safetensors(path: Path) -> Contents:
    """The tensors of a ``.safetensors`` file (the library validates header and offsets)."""
    return Contents(tensors=_read_safetensors(path))


def read_torch_save(path: Path) -> Contents:
    """The tensors of a ``torch.save`` file, through the weights-only unpickler after the
    archive's pickles pass torch's weights-only list; training checkpoints are unwrapped."""
    state, notes = unwrap_state_dict(_read_torch_save(path), path.name)
    return Contents(tensors=state, notes=notes)


def read_export_program(path: Path) -> Contents:
    """The module of a ``torch.export`` archive, after the allow-lists of
    :mod:`genscope.io.export_check` (see :func:`_load_export`)."""
    module, static_batch = _load_export(path)
    return Contents(module=module, static_batch_size=static_batch)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except MemoryError:
        raise
    except Exception as exc:  # any failure to parse is a corrupt file
        raise BadCheckpoint(f"{path.name}: corrupt safetensors file ({first_line(exc)})") from None


def _read_torch_save(path: Path) -> Any:
    if zipfile.is_zipfile(path):
        # torch's own weights-only allow-list, applied to the opcodes before unpickling.
        try:
            with zipfile.ZipFile(path) as zf:
                unsafe = _pickled_globals(zf)
        except ArchiveError as exc:
            raise (UnsafeCheckpoint if exc.unsafe else BadCheckpoint)(
                f"{path.name}: {exc}"
            ) from None
        if unsafe:
            raise UnsafeCheckpoint(
                f"{path.name} needs full unpickling to load (it holds {_clip(unsafe, 4)}), "
                f"which could run arbitrary code, so it was not loaded. {EXPORT_HINT}",
                {"globals": unsafe[:20]},
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpoint(
            f"{path.name} needs full unpickling to load ({_unpickling_culprit(exc)}), which "
            f"could run arbitrary code, so it was not loaded. {EXPORT_HINT}"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:  # torch raises many kinds on a broken or crafted file
        raise BadCheckpoint(
            f"{path.name}: truncated or corrupt torch.save file ({first_line(exc)})"
        ) from None


def _unpickling_culprit(exc: Exception) -> str:
    """The object torch's weights-only unpickler refused, e.g. ``GLOBAL io.open``."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if match:
        return f"it holds {match.group(1)}"
    return "it holds objects other than tensors and plain containers"


def unwrap_state_dict(
    obj: Any, name: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Find the tensors of a training checkpoint; return them and what was unwrapped.

    Follows ``state_dict``/``model``/``net``… keys (nested too), then strips a prefix common to
    every key (``module.`` from DataParallel/DDP, ``_orig_mod.`` from ``torch.compile``).
    """
    notes: list[str] = []
    depth = 0
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj) and depth < 4:
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        notes.append(f"took the tensors under key {key!r}")
        others = sorted(str(k) for k in obj if k != key)
        if others:
            notes.append(f"ignored non-tensor entries {others[:10]}")
        obj = obj[key]
        depth += 1
    if not isinstance(obj, Mapping):
        raise BadCheckpoint(
            f"{name}: expected a state dict (a mapping of tensors), got {type(obj).__name__}"
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    dropped = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if not tensors:
        raise BadCheckpoint(
            f"{name}: no tensors found in the state dict (keys: {sorted(obj)[:10]})"
        )
    if dropped:
        notes.append(f"ignored non-tensor entries {dropped[:10]}")
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in tensors):
                tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
                notes.append(f"stripped the prefix {prefix!r}")
                changed = True
    return tensors, notes


def _is_tensor_dict(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and sum(isinstance(v, torch.Tensor) for v in obj.values()) >= len(obj) / 2


OPTIONAL_BUFFERS = ("num_batches_tracked",)


def check_weights(
    expected: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    name: str = "checkpoint",
) -> None:
    """Compare ``state`` with the tensors a module expects (real or meta): list every missing
    or unexpected key, shape mismatch and dtype that cannot stand for the expected one
    (a floating parameter needs floating weights)."""
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_BUFFERS)]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    dtypes = [
        f"{k}: file {state[k].dtype} vs model {v.dtype}"
        for k, v in expected.items()
        if k in state and v.is_floating_point() and not state[k].is_floating_point()
    ]
    if missing or unexpected or shapes or dtypes:
        parts = []
        if missing:
            parts.append(f"missing keys {_clip(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_clip(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {_clip(shapes)}")
        if dtypes:
            parts.append(f"dtype mismatches {_clip(dtypes)}")
        raise WeightMismatch(
            f"{name} does not fit the architecture: " + "; ".join(parts),
            {
                "missing": missing,
                "unexpected": unexpected,
                "shape_mismatches": shapes,
                "dtype_mismatches": dtypes,
            },
        )


def load_weights(
    module: nn.Module, state: Mapping[str, torch.Tensor], name: str = "checkpoint"
) -> None:
    """Copy ``state`` into ``module``; list every missing/unexpected key and shape mismatch."""
    expected = module.state_dict()
    check_weights(expected, state, name)
    with torch.no_grad():
        for key, target in expected.items():
            if key in state:
                target.copy_(state[key].to(target.dtype))


def _clip(items: list[str], n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)})"


def check_finite(module: nn.Module, name: str = "checkpoint") -> None:
    bad = [
        key
        for key, t in list(module.named_parameters()) + list(module.named_buffers())
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise NonFiniteWeights(
            f"{name} has non-finite weights (NaN or inf) in {_clip(bad)}", {"tensors": bad}
        )


def set_eval(module: nn.Module) -> nn.Module:
    """Put a module in eval mode; exported programs are fixed at export and are left as they are."""
    if not isinstance(module, torch.fx.GraphModule):
        module.eval()
    return module


# --- torch.export -------------------------------------------------------------------------------

_SAFE_LOAD_LOCK = threading.Lock()


@contextlib.contextmanager
def _no_full_unpickling() -> Iterator[None]:
    """Force every ``torch.load`` to weights-only and refuse plain ``pickle.loads`` meanwhile.

    torch.export's loader calls ``torch.load(weights_only=False)`` for some members and
    ``pickle.loads`` for opaque constants; a crafted archive could run code through either.
    """
    original_load = torch.load
    original_loads = pickle.loads
    original_obj = getattr(torch._C, "_pickle_load_obj", None)

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original_load(*args, **kwargs)

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise pickle.UnpicklingError("Unsupported pickled object in archive")

    with _SAFE_LOAD_LOCK:
        torch.load = weights_only_load  # type: ignore[assignment]
        pickle.loads = refuse
        if original_obj is not None:
            torch._C._pickle_load_obj = refuse
        try:
            yield
        finally:
            torch.load = original_load  # type: ignore[assignment]
            pickle.loads = original_loads
            if original_obj is not None:
                torch._C._pickle_load_obj = original_obj


_CUSTOM_OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")


def _scan_export(path: Path) -> None:
    """Refuse a ``.pt2`` archive whose pickled members hold more than tensors.

    The weights/constants configs say which members are pickles (``use_pickle``): those must be
    ``torch.save`` archives whose globals torch's weights-only unpickler accepts; custom and
    opaque objects (``pickle.loads``/TorchBind) are refused outright.
    """
    programs = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for config_name in zf.namelist():
                if config_name.endswith(".pt"):  # sample inputs: a torch.save archive
                    _check_pickled_tensor(path, zf, config_name, config_name.rsplit("/", 1)[-1])
                    continue
                if config_name.endswith(".json") and not config_name.endswith("_config.json"):
                    program = json.loads(read_member(zf, config_name, MAX_CODE_BYTES))
                    if isinstance(program, dict) and "graph_module" in program:
                        _check_program(path, program, config_name)
                        programs += 1
                    continue
                if not config_name.endswith(
                    (
                        "data/weights/model_weights_config.json",
                        "data/constants/model_constants_config.json",
                    )
                ):
                    continue
                folder = config_name.rsplit("/", 1)[0]
                config = json.loads(read_member(zf, config_name, MAX_CODE_BYTES))
                entries = config.get("config", {}) if isinstance(config, dict) else {}
                for fqn, meta in entries.items() if isinstance(entries, dict) else []:
                    if not isinstance(meta, dict):
                        continue
                    member = f"{folder}/{meta.get('path_name', '')}"
                    if str(meta.get("path_name", "")).startswith(_CUSTOM_OBJECT_PREFIXES):
                        raise UnsafeCheckpoint(
                            f"{path.name}: the archive holds a pickled Python object ({fqn}) that "
                            f"needs full unpickling; refused. {EXPORT_HINT}"
                        )
                    if meta.get("use_pickle") and member in zf.namelist():
                        _check_pickled_tensor(path, zf, member, str(fqn))
    except ArchiveError as exc:
        raise (UnsafeCheckpoint if exc.unsafe else BadCheckpoint)(f"{path.name}: {exc}") from None
    except (ValueError, KeyError, zipfile.BadZipFile, OSError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser (or the check) descends
        raise BadCheckpoint(
            f"{path.name}: not a loadable torch.export archive ({first_line(exc)})"
        ) from None
    if programs == 0:
        raise BadCheckpoint(f"{path.name}: the torch.export archive holds no program")


def _refusal(path: Path, exc: ProgramRefused) -> GenScopeError:
    """The engine error for a program outside the allow-lists (training mode: how to fix it)."""
    text = str(exc)
    if text.startswith("training:"):
        return BadCheckpoint(
            f"{path.name} was exported in training mode ({text.split(':', 1)[1]}); export after "
            "model.eval() so BatchNorm uses its running statistics and dropout is off"
        )
    return UnsafeCheckpoint(f"{path.name}: {text}; refused. {EXPORT_HINT}")


def _check_program(path: Path, program: dict[str, Any], member: str) -> None:
    try:
        check_program_json(program, member.rsplit("/", 1)[-1])
    except ProgramRefused as exc:
        raise _refusal(path, exc) from None


def _pickled_globals(zf: zipfile.ZipFile) -> list[str]:
    """The globals outside torch's weights-only list that the ``data.pkl`` pickles of a
    ``torch.save`` archive import (:func:`~genscope.io.archives.scan_pickle`: the pickle
    machine's stack and memo simulated, nothing unpickled)."""
    found: list[str] = []
    for name in zf.namelist():
        if name.endswith("data.pkl"):
            found += scan_pickle(read_member(zf, name, MAX_PICKLE_BYTES), weights_global)
    return found


def _check_pickled_tensor(path: Path, zf: zipfile.ZipFile, member: str, fqn: str) -> None:
    data = read_member(zf, member, zf.getinfo(member).file_size)
    unsafe = ["a raw pickle"]
    if data[:4] == b"PK\x03\x04":
        check_zip(io.BytesIO(data), name=member)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                unsafe = _pickled_globals(inner)
        except (ArchiveError, zipfile.BadZipFile) as exc:
            raise BadCheckpoint(
                f"{path.name}: corrupt pickled tensor {fqn} ({first_line(exc)})"
            ) from None
    if unsafe:
        raise UnsafeCheckpoint(
            f"{path.name}: the archive holds pickled objects that need full unpickling "
            f"({fqn}: {_clip(unsafe, 4)}); refused",
            {"member": member, "globals": unsafe[:20]},
        )


def _load_export(path: Path) -> tuple[nn.Module, int | None]:
    _scan_export(path)
    try:
        with warnings.catch_warnings(), _no_full_unpickling():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpoint(
            f"{path.name}: the archive holds pickled objects that need full unpickling "
            f"({_unpickling_culprit(exc)}); refused"
        ) from None
    except Exception as exc:  # torch raises many kinds on a broken archive
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BadCheckpoint(f"{path.name}: not a loadable torch.export archive ({first})") from None
    try:  # the graphs torch built, checked again before anything runs them
        check_graph(program.graph_module, "the program")
    except ProgramRefused as exc:
        raise _refusal(path, exc) from None
    static = _static_batch_size(program)
    module = program.module()
    if static is not None:
        _accept_any_batch(module, static)
    return module, static


def _static_batch_size(program: Any) -> int | None:
    users = list(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in users[:1]:
            val = node.meta.get("val")
            shape = getattr(val, "shape", None)
            if shape is not None and len(shape) > 0 and isinstance(shape[0], int):
                return int(shape[0])
    return None


def _accept_any_batch(module: nn.Module, batch: int) -> None:
    """Let a program exported with a fixed batch size take any batch: split and zero-pad.

    Exact in eval mode, where examples do not interact. The parameters stay the module's own, so
    ``torch.func.functional_call`` still substitutes them.
    """
    original = type(module).forward

    def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n == batch:
            return original(self, x)
        outs = []
        for start in range(0, n, batch):
            chunk = x[start : start + batch]
            size = chunk.shape[0]
            if size < batch:
                pad = chunk.new_zeros((batch - size, *chunk.shape[1:]))
                chunk = torch.cat([chunk, pad])
            outs.append(original(self, chunk)[:size])
        return torch.cat(outs)

    module.forward = types.MethodType(forward, module)  # type: ignore[method-assign]


def load_from_bytes(data: bytes, suffix: str, **kwargs: Any) -> LoadedModel:
    """Load a checkpoint from memory (tests, uploads) through a temporary file."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"checkpoint{suffix}"
        path.write_bytes(data)
        loaded = load_checkpoint(path, **kwargs)
        loaded.path = None
        return loaded


__all__ = [
    "FORMAT_EXPORT",
    "FORMAT_SAFETENSORS",
    "FORMAT_STATE_DICT",
    "FORMAT_TORCHSCRIPT",
    "LoadedModel",
    "check_weights",
    "detect_format",
    "file_sha256",
    "load_checkpoint",
    "load_from_bytes",
    "load_into_architecture",
    "load_weights",
    "read_export_program",
    "read_safetensors",
    "read_torch_save",
    "unwrap_state_dict",
]
