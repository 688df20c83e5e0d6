"""A corpus of hostile and broken input files, built in memory, deterministic and small.

Each :class:`Case` builds one file's bytes (``build(marker)``; pickle and program payloads create
``marker`` if they are ever executed) and says what the engine must answer: the error code, and for
uploads whether it is a checkpoint (with which architecture) or a dataset. The engine tests
run every case through the loaders in-process; the API tests upload one representative per
category (``api=True``).

Categories: ``pickle`` (code-execution payloads wherever a pickle can hide, memoised imports
included), ``program`` (``.pt2`` graphs outside the operator allow-list — higher-order
operators, operator-valued arguments, I/O operators generated from torch's dispatcher, Python in
symbolic expressions and guards — and TorchScript in any spelling), ``corrupt``
(truncated, wrong-type and empty files), ``bomb`` (zip bombs), ``traversal`` (member names that
escape a folder), ``header`` (absurd shapes, sizes, offsets and dtypes in headers), ``arch``
(architectures that would allocate absurd memory) and ``dataset`` (broken arrays).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

MLP = {"input_dim": 2, "widths": [8], "num_classes": 2}


# --- payloads -----------------------------------------------------------------------------------


class Plant:
    """Unpickling this object creates ``path`` (through ``open``, ``os.system`` or ``exec``)."""

    def __init__(self, path: str, via: str = "open") -> None:
        self.path, self.via = path, via

    def __reduce__(self) -> tuple[Any, ...]:
        if self.via == "system":
            return (os.system, (f"touch {shlex.quote(self.path)}",))
        if self.via == "exec":
            return (exec, (f"open({self.path!r}, 'w').close()",))
        return (open, (self.path, "w"))


class FileReader(nn.Module):
    """A model whose forward maps ``path`` with ``torch.from_file`` (creating it): TorchScript
    can touch the server's files although no Python runs."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.w = nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.from_file(self.path, True, 16)
        return x * self.w + t[:2]


def mlp_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tests' moons MLP (2 -> 8 -> 2) as a torch state dict."""
    from tests.conftest import mlp_state as numpy_state

    return {k: torch.from_numpy(v) for k, v in numpy_state(seed=seed).items()}


def _tiny_module() -> nn.Module:
    from genscope.io.zoo import build_model

    torch.manual_seed(0)
    model = build_model("mlp", MLP).eval()
    model.load_state_dict(mlp_state())
    return model


def torch_save_bytes(obj: Any, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


@lru_cache(maxsize=1)
def clean_pt2() -> bytes:
    """A valid torch.export archive of the tiny MLP (built once per process)."""
    program = torch.export.export(_tiny_module(), (torch.zeros(3, 2),))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


@lru_cache(maxsize=1)
def clean_torchscript() -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(_tiny_module()), buf)
    return buf.getvalue()


def clean_state_dict() -> bytes:
    return torch_save_bytes(mlp_state())


def clean_safetensors() -> bytes:
    from tests.conftest import mlp_state as numpy_state
    from tests.conftest import safetensors_bytes

    return safetensors_bytes(numpy_state(seed=0))


def rewrite_zip(
    data: bytes,
    replace: Callable[[str, bytes], bytes | None] | None = None,
    add: dict[str, bytes] | None = None,
) -> bytes:
    """A copy of a zip archive with members replaced (``replace(name, data)`` returns new
    bytes, or None to keep them) and members added under the archive's root folder."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        root = src.namelist()[0].split("/", 1)[0]
        for info in src.infolist():
            body = src.read(info.filename)
            new = replace(info.filename, body) if replace else None
            dst.writestr(info, body if new is None else new)
        for name, body in (add or {}).items():
            dst.writestr(f"{root}/{name}", body)
    return out.getvalue()


# --- a raw zip writer: names, sizes and CRCs exactly as given -----------------------------------


@dataclass
class Entry:
    """One member of :func:`raw_zip`: ``data`` is written as is (already compressed when
    ``method`` is 8); ``size``/``crc`` default to those of ``data`` (stored)."""

    name: str
    data: bytes
    method: int = 0
    size: int | None = None
    compressed: int | None = None
    crc: int | None = None
    flags: int = 0


def raw_zip(entries: list[Entry]) -> bytes:
    """A zip archive written field by field, so that tests can declare any name and size."""
    out = bytearray()
    central = bytearray()
    for e in entries:
        name = e.name.encode("utf-8")
        size = len(e.data) if e.size is None else e.size
        packed = len(e.data) if e.compressed is None else e.compressed
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        offset = len(out)
        out += struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            20,
            e.flags,
            e.method,
            0,
            0x21,
            crc,
            packed,
            size,
            len(name),
            0,
        )
        out += name + e.data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            e.flags,
            e.method,
            0,
            0x21,
            crc,
            packed,
            size,
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += name
    n = len(entries)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), len(out), 0)
    return bytes(out + central + eocd)


def zip_members(data: bytes) -> list[Entry]:
    """The members of a (stored or deflated) archive as stored :class:`Entry` objects."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [Entry(i.filename, zf.read(i.filename)) for i in zf.infolist()]


GIB = 1 << 30
_ZERO_CHUNK = 16 << 20


@lru_cache(maxsize=1)
def _zeros_blocks() -> tuple[bytes, bytes]:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(bytes(_ZERO_CHUNK)) + comp.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    return block, end


def deflated_zeros(total: int = GIB, prefix: bytes = b"") -> bytes:
    """A raw deflate stream of ``prefix`` + ``total`` zero bytes (a multiple of 16 MiB), about
    1000 times smaller than its output: 1 GiB from about 1 MB."""
    block, end = _zeros_blocks()
    head = b""
    if prefix:
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    return head + block * (total // _ZERO_CHUNK) + end


@lru_cache(maxsize=4)
def zeros_crc(total: int = GIB, prefix: bytes = b"") -> int:
    crc = zlib.crc32(prefix)
    chunk = bytes(_ZERO_CHUNK)
    for _ in range(total // _ZERO_CHUNK):
        crc = zlib.crc32(chunk, crc)
    return crc


# --- datasets -----------------------------------------------------------------------------------


def npz_bytes(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def st_bytes(**arrays: np.ndarray) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()})


def good_arrays(n: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.normal(size=(n, 2)).astype(np.float32),
        "y_train": (np.arange(n) % 2).astype(np.int64),
        "x_test": rng.normal(size=(4, 2)).astype(np.float32),
        "y_test": (np.arange(4) % 2).astype(np.int64),
    }


def _with(**changes: Any) -> dict[str, Any]:
    arrays: dict[str, Any] = dict(good_arrays())
    for key, value in changes.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    return arrays


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


# --- safetensors headers -----------------------------------------------------------------------


def st_raw(header: dict[str, Any], data: bytes, length: int | None = None) -> bytes:
    body = json.dumps(header).encode()
    return struct.pack("<Q", len(body) if length is None else length) + body + data


def _st_one(dtype: str, shape: list[int], offsets: list[int], data: bytes) -> bytes:
    return st_raw(
        {"layers.0.weight": {"dtype": dtype, "shape": shape, "data_offsets": offsets}}, data
    )


# --- torch.save archives with crafted storages ---------------------------------------------------


class _Storage:
    """Stands for a storage in :func:`crafted_torch_save`'s pickle."""


class _Tensor:
    def __init__(self, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.size, self.stride = size, stride

    def __reduce__(self) -> tuple[Any, ...]:
        args = (_Storage(), 0, self.size, self.stride, False, OrderedDict())
        return (torch._utils._rebuild_tensor_v2, args)


def crafted_torch_save(
    size: tuple[int, ...],
    numel: int,
    data: bytes = bytes(32),
    storage: Any = torch.FloatStorage,
    stride: tuple[int, ...] | None = None,
) -> bytes:
    """A torch.save archive whose only tensor declares ``size`` over a storage of ``numel``
    elements, while the storage record holds ``data``."""
    if stride is None:
        stride = tuple(int(np.prod(size[i + 1 :])) for i in range(len(size)))
    buf = io.BytesIO()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, _Storage):
                return ("storage", storage, "0", "cpu", numel)
            return None

    Pickler(buf, protocol=2).dump({"layers.0.weight": _Tensor(size, stride)})
    return raw_zip(
        [
            Entry("archive/data.pkl", buf.getvalue()),
            Entry("archive/byteorder", b"little"),
            Entry("archive/data/0", data),
            Entry("archive/version", b"3\n"),
        ]
    )


def crafted_legacy_save(numel: int, size: tuple[int, ...]) -> bytes:
    """A legacy (non-zip) torch.save file whose storage declares ``numel`` elements while the
    file holds 8 of them."""
    buf = io.BytesIO()
    for header in (
        0x1950A86A20F9469CFC6C,  # torch's legacy magic number
        1001,
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}},
    ):
        pickle.dump(header, buf, protocol=2)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, "0", "cpu", numel, None)
            return None

    stride = tuple(int(np.prod(size[i + 1 :])) for i in range(len(size)))
    Pickler(buf, protocol=2).dump({"layers.0.weight": _Tensor(size, stride)})
    pickle.dump(["0"], buf, protocol=2)
    buf.write(numel.to_bytes(8, "little") + bytes(32))
    return buf.getvalue()


# --- programs: .pt2 graphs outside the allow-lists, TorchScript in any spelling ----------------

#: Higher-order operators of torch (each calls a function or graph it is given).
HIGHER_ORDER_OPERATORS = (
    "wrap",
    "cond",
    "while_loop",
    "map_impl",
    "scan",
    "associative_scan",
    "wrap_with_set_grad_enabled",
    "wrap_with_autocast",
    "auto_functionalized",
    "auto_functionalized_v2",
    "invoke_subgraph",
    "run_const_graph",
    "strict_mode",
    "with_effects",
    "hints_wrapper",
    "out_dtype",
    "flex_attention",
    "tag_activation_checkpoint",
    "executorch_call_delegate",
    "triton_kernel_wrapper_mutation",
)
_IO_PATTERN = ("from_file", "save", "load", "seed", "rng", "print", "copy_", "set_", "file")


def registered_operators() -> list[str]:
    """Every operator registered with torch's dispatcher, spelled as a ``.pt2`` node target."""
    out = []
    for name in torch._C._dispatch_get_all_op_names():
        namespace, _, rest = name.partition("::")
        op, _, overload = rest.partition(".")
        out.append(f"torch.ops.{namespace}.{op}.{overload or 'default'}")
    return sorted(out)


def io_operators() -> list[str]:
    """Registered ATen operators that touch files, RNG state, printing or copy into memory in
    place: generated from the dispatcher, not listed by hand."""
    from genscope.io.export_check import ALLOWED_OPERATORS

    return [
        t
        for t in registered_operators()
        if t.startswith("torch.ops.aten.")
        and "foreach" not in t
        and any(p in t.split(".")[3] for p in _IO_PATTERN)
        and t not in ALLOWED_OPERATORS
    ]


def _arg(name: str, **value: Any) -> dict[str, Any]:
    return {"name": name, "arg": value, "kind": 1}


def pt2_program(mutate: Callable[[dict[str, Any]], None]) -> bytes:
    """The clean ``.pt2`` archive with its JSON program changed by ``mutate``."""

    def replace(name: str, body: bytes) -> bytes | None:
        if name.endswith(".json") and "/models/" in f"/{name}":
            program = json.loads(body)
            mutate(program)
            return json.dumps(program).encode()
        return None

    return rewrite_zip(clean_pt2(), replace)


def _first_node(program: dict[str, Any]) -> dict[str, Any]:
    return program["graph_module"]["graph"]["nodes"][0]


def pt2_calling(target: str, *inputs: dict[str, Any]) -> bytes:
    """The clean program whose first node calls ``target`` with ``inputs`` added."""

    def mutate(program: dict[str, Any]) -> None:
        node = _first_node(program)
        node["target"] = target
        node["inputs"] = [*node["inputs"], *inputs]

    return pt2_program(mutate)


def _from_file_args(marker: Path) -> tuple[dict[str, Any], ...]:
    """``from_file(marker, shared=True, size=16)``: creates ``marker`` when it runs."""
    return (
        _arg("filename", as_string=str(marker)),
        _arg("shared", as_bool=True),
        _arg("size", as_int=16),
    )


def _program_cases() -> list[Case]:
    def wrap_from_file(m: Path) -> bytes:  # the red team's payload, first half
        fn = _arg("fn", as_operator="torch.ops.aten.from_file.default")
        return pt2_calling("torch.ops.higher_order.wrap", fn, *_from_file_args(m))

    def hop(name: str) -> Callable[[Path], bytes]:
        fn = _arg("fn", as_operator="torch.ops.aten.copy_.default")
        return lambda m: pt2_calling(f"torch.ops.higher_order.{name}", fn, *_from_file_args(m))

    def op(target: str) -> Callable[[Path], bytes]:
        return lambda m: pt2_calling(target, *_from_file_args(m))

    def operator_argument(m: Path) -> bytes:  # an allowed target given an operator
        return pt2_calling(
            "torch.ops.aten.flatten.using_ints",
            _arg("evil", as_operator="torch.ops.aten.from_file.default"),
        )

    def subgraph_argument(m: Path) -> bytes:
        return pt2_calling(
            "torch.ops.aten.flatten.using_ints",
            _arg("body", as_graph={"name": "g", "graph": {"nodes": []}}),
        )

    def sympy_eval(m: Path) -> bytes:  # sympify evaluates Python
        evil = f"__import__('os').system('touch {m}')"

        def mutate(program: dict[str, Any]) -> None:
            values = program["graph_module"]["graph"]["tensor_values"]
            first = next(iter(values.values()))
            first["sizes"][0] = {"as_expr": {"expr_str": evil, "hint": {"as_int": 3}}}

        return pt2_program(mutate)

    def range_constraint(m: Path) -> bytes:
        evil = f"__import__('os').system('touch {m}')"

        def mutate(program: dict[str, Any]) -> None:
            program["range_constraints"] = {evil: {"min_val": 2, "max_val": 8}}

        return pt2_program(mutate)

    def guard_code(m: Path) -> bytes:  # compiled into the module by ExportedProgram.module()
        def mutate(program: dict[str, Any]) -> None:
            program["guards_code"] = [f"__import__('os').system('touch {m}') == 0"]

        return pt2_program(mutate)

    def custom_object(m: Path) -> bytes:
        def mutate(program: dict[str, Any]) -> None:
            program["graph_module"]["graph"]["custom_obj_values"] = {
                "obj": {"name": "obj", "class_fqn": "__torch__.torch.classes.evil.Run"}
            }

        return pt2_program(mutate)

    cases = [
        Case("pt2-hop-wrap-from-file", "program", wrap_from_file, UNSAFE, ".pt2", api=True),
        Case("pt2-operator-argument", "program", operator_argument, UNSAFE, ".pt2"),
        Case("pt2-subgraph-argument", "program", subgraph_argument, UNSAFE, ".pt2"),
        Case("pt2-sympy-eval", "program", sympy_eval, UNSAFE, ".pt2"),
        Case("pt2-range-constraint-eval", "program", range_constraint, UNSAFE, ".pt2"),
        Case("pt2-guard-code", "program", guard_code, UNSAFE, ".pt2"),
        Case("pt2-custom-object", "program", custom_object, UNSAFE, ".pt2"),
    ]
    cases += [
        Case(f"pt2-hop-{h}", "program", hop(h), UNSAFE, ".pt2") for h in HIGHER_ORDER_OPERATORS
    ]
    others = [
        "torch.ops.genscope_evil.run.default",
        "torch.ops.aten.add_.Tensor",
        "torch.ops.aten.relu.out",
        "builtins.exec",
        "os.system",
        "math.floor",
        "#evil.extension",
    ]
    cases += [
        Case(f"pt2-op-{t.removeprefix('torch.ops.')}", "program", op(t), UNSAFE, ".pt2")
        for t in [*io_operators(), *others]
    ]
    cases += [
        Case(f"ts-{i}", "program", build, UNSAFE) for i, build in torchscript_spellings().items()
    ]
    return cases


_TS_CALLS = (
    "torch.from_file({path!r}, True, 16)",
    "torch . from_file({path!r}, True, 16)",
    "torch.\\\nfrom_file({path!r}, True, 16)",
    "ops . aten . from_file({path!r}, True, 16)",
    "getattr(torch, 'from_' + 'file')({path!r}, True, 16)",
)


def torchscript_spellings() -> dict[str, Callable[[Path], bytes]]:
    """TorchScript archives whose code calls ``from_file`` in many spellings (generated from
    :data:`_TS_CALLS`), plus a clean one: every TorchScript archive is refused."""

    def build(call: str | None) -> Callable[[Path], bytes]:
        def make(m: Path) -> bytes:
            if call is None:
                return clean_torchscript()

            def replace(name: str, body: bytes) -> bytes | None:
                if "/code/" not in f"/{name}" or not name.endswith(".py"):
                    return None
                line = f"\n_evil = {call.format(path=str(m))}\n"
                return body + line.encode()

            return rewrite_zip(clean_torchscript(), replace)

        return make

    out: dict[str, Callable[[Path], bytes]] = {"clean": build(None)}
    out.update({f"from-file-spelling-{k}": build(c) for k, c in enumerate(_TS_CALLS)})
    return out


# --- pickles whose imports hide behind the memo ---------------------------------------------


def _text(s: str) -> bytes:
    data = s.encode()
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


_PUTS: dict[str, Callable[[int], bytes]] = {
    "PUT": lambda k: b"p" + str(k).encode() + b"\n",
    "BINPUT": lambda k: b"q" + bytes([k]),
    "LONG_BINPUT": lambda k: b"r" + struct.pack("<I", k),
    "MEMOIZE": lambda k: b"\x94",
}
_GETS: dict[str, Callable[[int], bytes]] = {
    "GET": lambda k: b"g" + str(k).encode() + b"\n",
    "BINGET": lambda k: b"h" + bytes([k]),
    "LONG_BINGET": lambda k: b"j" + struct.pack("<I", k),
}
MEMO_TARGETS = (("os", "system"), ("builtins", "exec"), ("subprocess", "check_call"))


def memo_pickle(module: str, name: str, put: str, get: str, argument: str) -> bytes:
    """``module.name(argument)`` through STACK_GLOBAL, its two strings stored in the memo and
    fetched back after a benign decoy pair (``collections.OrderedDict``) was pushed and
    popped: a scanner that judged by the last strings pushed would call it safe."""
    return (
        b"\x80\x04"
        + _text(module)
        + _PUTS[put](0)
        + b"0"  # POP
        + _text(name)
        + _PUTS[put](1)
        + b"0"
        + _text("collections")
        + _text("OrderedDict")
        + b"00"
        + _GETS[get](0)
        + _GETS[get](1)
        + b"\x93"  # STACK_GLOBAL
        + _text(argument)
        + b"\x85R."  # TUPLE1 REDUCE STOP
    )


def _memo_cases() -> list[Case]:
    def in_state_dict(module: str, name: str, put: str, get: str) -> Callable[[Path], bytes]:
        def make(m: Path) -> bytes:
            payload = memo_pickle(module, name, put, get, f"touch {m}")
            return rewrite_zip(
                clean_state_dict(), lambda n, _b: payload if n.endswith("data.pkl") else None
            )

        return make

    return [
        Case(
            f"pt-memo-{put}-{get}-{module}-{name}",
            "pickle",
            in_state_dict(module, name, put, get),
            UNSAFE,
        )
        for put in _PUTS
        for get in _GETS
        for module, name in MEMO_TARGETS
    ]


# --- the corpus ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile file and the answer it must get."""

    id: str
    category: str
    build: Callable[[Path], bytes]
    code: str  # the engine's error code
    suffix: str = ".pt"
    kind: str = "checkpoint"  # or "dataset"
    arch: str | None = "mlp"
    arch_config: dict[str, Any] | None = field(default_factory=lambda: dict(MLP))
    api: bool = False  # one representative per category is uploaded through the API
    api_status: int = 422

    @property
    def filename(self) -> str:
        return f"{self.id}{self.suffix}"


UNSAFE, BAD = "unsafe_checkpoint", "bad_checkpoint"


def _flag_pickled(config: dict[str, Any], path_name: str) -> None:
    """Mark the weight stored as ``path_name`` as a pickle (``use_pickle``) in a .pt2 config."""
    entries = [e for e in config["config"].values() if e.get("path_name") == path_name]
    assert entries, path_name
    for entry in entries:
        entry["use_pickle"] = True


def _pickle_cases() -> list[Case]:
    def state_with(m: Path, via: str) -> bytes:
        return torch_save_bytes({"state_dict": mlp_state(), "hook": Plant(str(m), via)})

    def pt2_pickled_weight(m: Path) -> bytes:
        payload = torch_save_bytes(Plant(str(m)))

        def replace(name: str, body: bytes) -> bytes | None:
            if name.endswith("model_weights_config.json"):
                config = json.loads(body)
                _flag_pickled(config, "weight_0")
                return json.dumps(config).encode()
            return payload if name.endswith("weights/weight_0") else None

        return rewrite_zip(clean_pt2(), replace)

    def pt2_raw_pickle(m: Path) -> bytes:
        def replace(name: str, body: bytes) -> bytes | None:
            if name.endswith("model_weights_config.json"):
                config = json.loads(body)
                _flag_pickled(config, "weight_0")
                return json.dumps(config).encode()
            if name.endswith("weights/weight_0"):
                return pickle.dumps(Plant(str(m), "system"), protocol=2)
            return None

        return rewrite_zip(clean_pt2(), replace)

    def pt2_opaque_constant(m: Path) -> bytes:
        def replace(name: str, body: bytes) -> bytes | None:
            if name.endswith("model_constants_config.json"):
                config = json.loads(body)
                config.setdefault("config", {})["evil"] = {
                    "path_name": "opaque_obj_0",
                    "use_pickle": True,
                }
                return json.dumps(config).encode()
            return None

        evil = pickle.dumps(Plant(str(m), "exec"), protocol=4)
        return rewrite_zip(clean_pt2(), replace, {"data/constants/opaque_obj_0": evil})

    def pt2_sample_inputs(m: Path) -> bytes:
        payload = torch_save_bytes(Plant(str(m)))
        return rewrite_zip(
            clean_pt2(), lambda n, _b: payload if n.endswith("sample_inputs/model.pt") else None
        )

    def pt2_aoti(m: Path) -> bytes:
        return rewrite_zip(
            clean_pt2(),
            add={
                "data/aotinductor/model/model.so": b"\x7fELF" + bytes(60),
                "data/aotinductor/model/model.wrapper.cpp": b"int x;",
            },
        )

    def ts_replace(member: str, protocol: int, via: str) -> Callable[[Path], bytes]:
        def build(m: Path) -> bytes:
            evil = pickle.dumps(Plant(str(m), via), protocol=protocol)
            replaced: list[str] = []

            def replace(name: str, _body: bytes) -> bytes | None:
                if not name.endswith(member):
                    return None
                replaced.append(name)
                return evil

            data = rewrite_zip(clean_torchscript(), replace)
            assert replaced, f"no member ends with {member}"
            return data

        return build

    def ts_from_file(m: Path) -> bytes:
        buf = io.BytesIO()
        torch.jit.save(torch.jit.script(FileReader(str(m))), buf)
        return buf.getvalue()

    return [
        Case("pt-zip-reduce-open", "pickle", lambda m: state_with(m, "open"), UNSAFE, api=True),
        Case("pt-zip-reduce-system", "pickle", lambda m: state_with(m, "system"), UNSAFE),
        Case("pt-zip-reduce-exec", "pickle", lambda m: state_with(m, "exec"), UNSAFE),
        Case(
            "pt-legacy-reduce",
            "pickle",
            lambda m: torch_save_bytes({"w": Plant(str(m), "system")}, legacy=True),
            UNSAFE,
        ),
        Case("pkl-protocol2", "pickle", lambda m: pickle.dumps(Plant(str(m)), protocol=2), UNSAFE),
        Case(
            "pkl-protocol4",
            "pickle",
            lambda m: pickle.dumps(Plant(str(m), "system"), protocol=4),
            UNSAFE,
        ),
        Case("pkl-protocol0", "pickle", lambda m: pickle.dumps(Plant(str(m)), protocol=0), BAD),
        Case("pt2-pickled-weight", "pickle", pt2_pickled_weight, UNSAFE, suffix=".pt2"),
        Case("pt2-raw-pickle-weight", "pickle", pt2_raw_pickle, UNSAFE, suffix=".pt2"),
        Case("pt2-opaque-constant", "pickle", pt2_opaque_constant, UNSAFE, suffix=".pt2"),
        Case("pt2-sample-inputs", "pickle", pt2_sample_inputs, UNSAFE, suffix=".pt2"),
        Case("pt2-aoti-shared-library", "pickle", pt2_aoti, UNSAFE, suffix=".pt2"),
        Case("ts-data-pkl-global", "pickle", ts_replace("data.pkl", 2, "system"), UNSAFE),
        Case("ts-constants-pkl-global", "pickle", ts_replace("constants.pkl", 2, "open"), UNSAFE),
        Case(
            "ts-debug-pkl-stack-global",
            "pickle",
            ts_replace(".debug_pkl", 4, "exec"),
            UNSAFE,
        ),
        Case("ts-code-from-file", "pickle", ts_from_file, UNSAFE),
    ]


def _nested_program(depth: int) -> Callable[[Path], bytes]:
    """The clean program with a list nested ``depth`` deep inside its graph (deeper than a
    recursive parser or check descends: a clear refusal, not a crash)."""

    def make(m: Path) -> bytes:
        def replace(name: str, body: bytes) -> bytes | None:
            if not (name.endswith(".json") and "/models/" in f"/{name}"):
                return None
            text = json.dumps(json.loads(body))
            return (text[:-1] + ', "nested": ' + "[" * depth + "]" * depth + "}").encode()

        return rewrite_zip(clean_pt2(), replace)

    return make


def _corrupt_cases() -> list[Case]:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)
    rng = np.random.default_rng(1234)
    return [
        Case("png-named-pt", "corrupt", lambda m: png, BAD, api=True),
        Case("random-bytes", "corrupt", lambda m: rng.bytes(4096), BAD),
        Case("text", "corrupt", lambda m: b"hello world\n", BAD),
        Case(
            "safetensors-half",
            "corrupt",
            lambda m: clean_safetensors()[: len(clean_safetensors()) // 2],
            BAD,
            suffix=".safetensors",
        ),
        Case(
            "zip-half", "corrupt", lambda m: clean_state_dict()[: len(clean_state_dict()) // 2], BAD
        ),
        Case(
            "pt2-half",
            "corrupt",
            lambda m: clean_pt2()[: len(clean_pt2()) // 2],
            BAD,
            suffix=".pt2",
        ),
        Case(
            "torchscript-half",
            "corrupt",
            lambda m: clean_torchscript()[: len(clean_torchscript()) // 2],
            BAD,
        ),
        Case("zip-header-only", "corrupt", lambda m: b"PK\x03\x04" + bytes(26), BAD),
        *(
            Case(f"pt2-json-nested-{depth}", "corrupt", _nested_program(depth), BAD, ".pt2")
            for depth in (5_000, 200_000)
        ),
        Case("empty", "corrupt", lambda m: b"", BAD, api_status=400),
    ]


def _bomb_cases() -> list[Case]:
    def declared_total(m: Path) -> bytes:
        # Three "stored" members each declaring 3.75 GiB (ratio 1): the sum is over the limit.
        big = 0xF0000000
        members = zip_members(clean_state_dict())
        members += [Entry(f"archive/pad{i}", b"", size=big, compressed=big) for i in range(3)]
        return raw_zip(members)

    def declared_ratio(m: Path) -> bytes:
        members = zip_members(clean_state_dict())
        members.append(Entry("archive/data/9", b"\x03\x00", method=8, size=0xF0000000, crc=0))
        return raw_zip(members)

    def actual_zeros(m: Path) -> bytes:
        members = zip_members(clean_state_dict())
        members.append(
            Entry("archive/data/9", deflated_zeros(), method=8, size=GIB, crc=zeros_crc())
        )
        return raw_zip(members)

    def npz_zeros(m: Path) -> bytes:
        header = npy_header((GIB // 8, 2))
        arrays = zip_members(npz_bytes(**good_arrays()))
        arrays = [a for a in arrays if a.name != "x_train.npy"]
        arrays.append(
            Entry(
                "x_train.npy",
                deflated_zeros(GIB, header),
                method=8,
                size=len(header) + GIB,
                crc=zeros_crc(GIB, header),
            )
        )
        return raw_zip(arrays)

    def npz_lying(m: Path) -> bytes:
        # Declares 64 bytes of data but inflates to 1 GiB; the CRC is the full stream's.
        header = npy_header((8, 2))
        arrays = [a for a in zip_members(npz_bytes(**good_arrays())) if a.name != "x_train.npy"]
        arrays.append(
            Entry(
                "x_train.npy",
                deflated_zeros(GIB, header),
                method=8,
                size=len(header) + 64,
                crc=zeros_crc(GIB, header),
            )
        )
        return raw_zip(arrays)

    return [
        Case("zip-declared-total", "bomb", declared_total, UNSAFE),
        Case("zip-declared-ratio", "bomb", declared_ratio, UNSAFE),
        Case("zip-deflated-1gib", "bomb", actual_zeros, UNSAFE, api=True),
        Case("npz-deflated-1gib", "bomb", npz_zeros, "bad_dataset", ".npz", "dataset", None, None),
        Case("npz-lying-size", "bomb", npz_lying, "bad_dataset", ".npz", "dataset", None, None),
    ]


def _traversal_cases() -> list[Case]:
    def with_member(name: str) -> Callable[[Path], bytes]:
        return lambda m: raw_zip([*zip_members(clean_state_dict()), Entry(name, b"x")])

    def npz_member(name: str) -> Callable[[Path], bytes]:
        return lambda m: raw_zip([*zip_members(npz_bytes(**good_arrays())), Entry(name, b"x")])

    def duplicate(m: Path) -> bytes:
        members = zip_members(clean_state_dict())
        pkl = next(e for e in members if e.name.endswith("data.pkl"))
        return raw_zip([*members, Entry(pkl.name, pickle.dumps(Plant(str(m)), protocol=2))])

    names = {
        "dotdot": "../../etc/genscope-x",
        "dotdot-inner": "archive/../../genscope-x",
        "absolute": "/tmp/genscope-x",
        "backslash": "archive\\..\\..\\genscope-x",
        "nul": "archive/ok\x00/../../genscope-x",
        "drive": "C:/genscope-x",
    }
    cases = [
        Case(f"zip-name-{key}", "traversal", with_member(name), UNSAFE, api=key == "dotdot")
        for key, name in names.items()
    ]
    cases.append(Case("zip-duplicate-member", "traversal", duplicate, UNSAFE))
    cases.append(
        Case(
            "npz-name-dotdot",
            "traversal",
            npz_member("../../x_train.npy"),
            "bad_dataset",
            ".npz",
            "dataset",
            None,
            None,
        )
    )
    return cases


def _header_cases() -> list[Case]:
    sfx = ".safetensors"
    huge = 10**6

    def npz_declared(m: Path) -> bytes:
        header = npy_header((10**12, 2))
        arrays = [a for a in zip_members(npz_bytes(**good_arrays())) if a.name != "x_train.npy"]
        return raw_zip([*arrays, Entry("x_train.npy", header + bytes(64))])

    def int_weights(m: Path) -> bytes:
        state = mlp_state()
        state["layers.0.weight"] = torch.zeros(8, 2, dtype=torch.int64)
        return torch_save_bytes(state)

    def complex_weights(m: Path) -> bytes:
        state = mlp_state()
        state["layers.0.weight"] = torch.zeros(8, 2, dtype=torch.complex64)
        return torch_save_bytes(state)

    return [
        Case(
            "st-shape-1e12",
            "header",
            lambda m: _st_one("F32", [huge, huge], [0, 32], bytes(32)),
            BAD,
            sfx,
            api=True,
        ),
        Case(
            "st-offsets-4tb",
            "header",
            lambda m: _st_one("F32", [huge, huge], [0, 4 * huge * huge], bytes(32)),
            BAD,
            sfx,
        ),
        Case(
            "st-shape-overflow",
            "header",
            lambda m: _st_one("F32", [2**40, 2**40], [0, 32], bytes(32)),
            BAD,
            sfx,
        ),
        Case(
            "st-length-2pow63",
            "header",
            lambda m: st_raw(
                {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), 2**63
            ),
            BAD,
            sfx,
        ),
        Case(
            "st-length-past-end",
            "header",
            lambda m: st_raw(
                {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), 10**6
            ),
            BAD,
            sfx,
        ),
        Case(
            "st-offsets-mismatch",
            "header",
            lambda m: _st_one("F32", [8, 2], [0, 60], bytes(60)),
            BAD,
            sfx,
        ),
        Case(
            "st-offsets-past-end",
            "header",
            lambda m: _st_one("F32", [8, 2], [64, 128], bytes(64)),
            BAD,
            sfx,
        ),
        Case(
            "st-dtype-mismatch",
            "header",
            lambda m: _st_one("F64", [8, 2], [0, 64], bytes(64)),
            BAD,
            sfx,
        ),
        Case(
            "st-unknown-dtype", "header", lambda m: _st_one("Q99", [2], [0, 8], bytes(8)), BAD, sfx
        ),
        Case(
            "pt-shape-1e12-storage-8",
            "header",
            lambda m: crafted_torch_save((huge, huge), 8),
            BAD,
        ),
        Case("pt-storage-1e12", "header", lambda m: crafted_torch_save((huge, huge), 10**12), BAD),
        Case("pt-storage-2pow62", "header", lambda m: crafted_torch_save((8, 2), 2**62), BAD),
        Case(
            "pt-storage-dtype-mismatch",
            "header",
            lambda m: crafted_torch_save((8, 2), 16, storage=torch.DoubleStorage),
            BAD,
        ),
        Case(
            "pt-negative-stride",
            "header",
            lambda m: crafted_torch_save((8, 2), 16, bytes(64), stride=(-1, 1)),
            BAD,
        ),
        Case(
            "pt-legacy-storage-1e9",
            "header",
            lambda m: crafted_legacy_save(10**9, (10**5, 10**4)),
            BAD,
        ),
        Case(
            "pt-legacy-storage-1e11",
            "header",
            lambda m: crafted_legacy_save(10**11, (10**6, 10**5)),
            BAD,
        ),
        Case("pt-int-weights", "header", int_weights, "weight_mismatch"),
        Case("pt-complex-weights", "header", complex_weights, "weight_mismatch"),
        Case(
            "npz-npy-shape-1e12",
            "header",
            npz_declared,
            "bad_dataset",
            ".npz",
            "dataset",
            None,
            None,
        ),
    ]


def _arch_cases() -> list[Case]:
    weights = lambda m: clean_safetensors()  # noqa: E731
    configs: dict[str, tuple[str, dict[str, Any]]] = {
        "mlp-width-1e9": ("mlp", {"input_dim": 2, "widths": [10**9], "num_classes": 2}),
        "mlp-input-1e9": ("mlp", {"input_dim": 10**9, "widths": [8], "num_classes": 2}),
        "mlp-1000-wide-layers": ("mlp", {"input_dim": 2, "widths": [100_000] * 1000}),
        "mlp-classes-1e9": ("mlp", {"input_dim": 2, "widths": [8], "num_classes": 10**9}),
        "mlp-width-bool": ("mlp", {"input_dim": 2, "widths": [True], "num_classes": 2}),
        "mlp-width-float": ("mlp", {"input_dim": 2, "widths": [8.5], "num_classes": 2}),
        "resnet-width-1e6": ("resnet", {"depth": 20, "width": 10**6}),
        "resnet-depth-1e6": ("resnet", {"depth": 10**6}),
        "wide-resnet-depth-1e6": ("wide_resnet", {"depth": 6 * 10**6 + 4}),
        "wide-resnet-huge": ("wide_resnet", {"depth": 994, "widen_factor": 64}),
        "nin-depth-1e6": ("nin", {"depth": 10**6}),
        "vgg-multiplier-1e6": ("vgg", {"width_multiplier": 1e6}),
        "unknown-arch": ("transformer", {}),
        "unknown-key": ("mlp", {"hidden": 10**9}),
    }
    return [
        Case(
            key,
            "arch",
            weights,
            "bad_architecture",
            ".safetensors",
            "checkpoint",
            arch,
            config,
            api=key == "mlp-width-1e9",
        )
        for key, (arch, config) in configs.items()
    ]


def _dataset_cases() -> list[Case]:
    n = 12
    x = good_arrays()["x_train"]
    y = good_arrays()["y_train"]
    nan_x = x.copy()
    nan_x[3, 1] = np.nan
    inf_x = x.copy()
    inf_x[5, 0] = np.inf
    npz: dict[str, dict[str, Any]] = {
        "strings-x": _with(x_train=np.array([["a", "b"]] * n)),
        "strings-y": _with(y_train=np.array(["cat"] * n)),
        "object-x": _with(x_train=np.array([[{"a": 1}, None]] * n, dtype=object)),
        "bool-x": _with(x_train=np.ones((n, 2), dtype=bool)),
        "complex-x": _with(x_train=np.ones((n, 2), dtype=np.complex64)),
        "nan-x": _with(x_train=nan_x),
        "inf-x": _with(x_train=inf_x),
        "negative-labels": _with(y_train=y - 1),
        "float-labels": _with(y_train=y + 0.5),
        "nan-labels": _with(y_train=np.full(n, np.nan)),
        "labels-1e7": _with(y_train=np.where(y > 0, 10**7, 0)),
        "labels-int64-max": _with(y_train=np.where(y > 0, np.iinfo(np.int64).max, 0)),
        "labels-beyond-num-classes": _with(num_classes=np.array(2), y_train=y * 5),
        "num-classes-vector": _with(num_classes=np.array([2, 3])),
        "num-classes-nan": _with(num_classes=np.array(np.nan)),
        "num-classes-1e12": _with(num_classes=np.array(10**12)),
        "length-mismatch": _with(y_train=y[:-3]),
        "zero-examples": _with(x_train=np.zeros((0, 2), np.float32), y_train=np.zeros(0, np.int64)),
        "zero-features": _with(x_train=np.zeros((n, 0), np.float32)),
        "scalar-x": _with(x_train=np.float32(1.0)),
        "2d-labels": _with(y_train=y[:, None]),
        "train-test-feature-mismatch": _with(x_test=np.zeros((4, 3), np.float32)),
        "x-test-without-y-test": _with(y_test=None),
        "missing-y-train": _with(y_train=None),
    }
    cases = [
        Case(
            f"npz-{key}",
            "dataset",
            (lambda m, a=arrays: npz_bytes(**a)),
            "bad_dataset",
            ".npz",
            "dataset",
            None,
            None,
            api=key == "object-x",
        )
        for key, arrays in npz.items()
    ]
    st: dict[str, dict[str, Any]] = {
        "nan-x": _with(x_train=nan_x),
        "labels-1e7": _with(y_train=np.where(y > 0, 10**7, 0)),
        "negative-labels": _with(y_train=y - 1),
        "length-mismatch": _with(y_train=y[:-3]),
        "train-test-feature-mismatch": _with(x_test=np.zeros((4, 3), np.float32)),
    }
    cases += [
        Case(
            f"st-{key}",
            "dataset",
            (lambda m, a=arrays: st_bytes(**a)),
            "bad_dataset",
            ".safetensors",
            "dataset",
            None,
            None,
        )
        for key, arrays in st.items()
    ]
    cases += [
        Case(
            "st-float8-x",
            "dataset",
            lambda m: st_raw(
                {
                    "x_train": {"dtype": "F8_E4M3", "shape": [12, 2], "data_offsets": [0, 24]},
                    "y_train": {"dtype": "I64", "shape": [12], "data_offsets": [24, 120]},
                },
                bytes(120),
            ),
            "bad_dataset",
            ".safetensors",
            "dataset",
            None,
            None,
        ),
        Case(
            "npz-not-zip",
            "dataset",
            lambda m: b"\x93NUMPY" + bytes(64),
            "bad_dataset",
            ".npz",
            "dataset",
            None,
            None,
        ),
        Case(
            "st-dataset-truncated",
            "dataset",
            lambda m: st_bytes(**good_arrays())[:100],
            "bad_dataset",
            ".safetensors",
            "dataset",
            None,
            None,
        ),
    ]

    def unsuffixed(name: str, body: bytes) -> Callable[[Path], bytes]:
        """The good arrays plus a member without the ``.npy`` suffix (np.load serves it)."""

        def build(m: Path) -> bytes:
            out = io.BytesIO(npz_bytes(**good_arrays()))
            with zipfile.ZipFile(out, "a") as zf:
                zf.writestr(name, body)
            return out.getvalue()

        return build

    huge = npy_header((1 << 33,)) + bytes(64)  # declares 32 GiB of float32, holds 64 bytes
    unsuffixed_cases = {
        "npz-unsuffixed-member-32gib": unsuffixed("x_val", huge),
        "npz-unsuffixed-duplicate-key": unsuffixed("x_train", npy_header((12, 2)) + bytes(96)),
        "npz-non-array-member": unsuffixed("notes.txt", b"not an array"),
    }
    cases += [
        Case(key, "dataset", build, "bad_dataset", ".npz", "dataset", None, None)
        for key, build in unsuffixed_cases.items()
    ]
    return cases


def corpus() -> list[Case]:
    """Every hostile case, in category order; ids are unique."""
    cases = (
        _pickle_cases()
        + _memo_cases()
        + _program_cases()
        + _corrupt_cases()
        + _bomb_cases()
        + _traversal_cases()
        + _header_cases()
        + _arch_cases()
        + _dataset_cases()
    )
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


CATEGORIES = ("pickle", "program", "corrupt", "bomb", "traversal", "header", "arch", "dataset")


def write_case(case: Case, folder: Path) -> tuple[Path, Path]:
    """Write ``case``'s file into ``folder``; return (file, marker that must never appear)."""
    marker = folder / f"{case.id}.pwned"
    path = folder / case.filename
    path.write_bytes(case.build(marker))
    return path, marker
