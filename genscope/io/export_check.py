"""What a ``torch.export`` archive (``.pt2``) may contain: allow-lists checked before it is loaded.

A ``.pt2`` file is a program. ``torch.export.load`` resolves every operator it names, including
operators passed as *arguments* (a higher-order operator such as ``higher_order.wrap`` calls its
first argument), parses every symbolic-shape expression with ``sympy.sympify`` (which evaluates
Python), and ``ExportedProgram.module()`` compiles the archive's ``guards_code`` strings into a
function. So the archive's JSON program is checked, before torch sees it, against allow-lists:

* every node's target is one of :data:`ALLOWED_OPERATORS`: pure tensor operators of the ATen
  library (no in-place or ``out=`` variants, no I/O such as ``from_file``/``save``, no RNG state,
  no custom namespaces) and the arithmetic of ``_operator`` on symbolic sizes; no higher-order
  operator is accepted (none has been reviewed);
* no argument is an operator, a subgraph or a custom (TorchBind) object, whatever the target;
* every symbolic expression (``expr_str``, range-constraint symbols) is a sum, product, quotient
  or comparison of integers and shape symbols, with functions from :data:`SYMPY_FUNCTIONS` only;
* every guard is an expression over input sizes in a small grammar (:func:`check_guard`).

After loading, :func:`check_graph` walks the loaded ``torch.fx`` graphs with the same list:
another line of defence, in case the JSON and what torch builds from it ever diverge.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from typing import Any

import torch

# --- operators -----------------------------------------------------------------------------------

_ATEN = """
abs.default add.Tensor add.Scalar addmm.default alias.default amax.default amin.default
any.dim any.default arange.default arange.start arange.start_step argmax.default argmin.default
avg_pool1d.default avg_pool2d.default avg_pool3d.default adaptive_avg_pool1d.default
adaptive_avg_pool2d.default adaptive_avg_pool3d.default _adaptive_avg_pool2d.default
adaptive_max_pool1d.default adaptive_max_pool2d.default baddbmm.default batch_norm.default
_native_batch_norm_legit_no_training.default bmm.default cat.default chunk.default
clamp.default clamp.Tensor clamp_min.default clamp_max.default clone.default
constant_pad_nd.default contiguous.default conv1d.default conv2d.default conv3d.default
convolution.default cos.default cumsum.default detach.default div.Tensor div.Scalar
div.Tensor_mode dropout.default einsum.default elu.default embedding.default eq.Scalar eq.Tensor
erf.default exp.default expand.default expand_as.default flatten.using_ints flip.default
floor_divide.default full.default full_like.default gather.default gelu.default ge.Scalar
ge.Tensor group_norm.default native_group_norm.default gt.Scalar gt.Tensor hardsigmoid.default
hardswish.default hardtanh.default index.Tensor index_select.default instance_norm.default
layer_norm.default native_layer_norm.default le.Scalar le.Tensor leaky_relu.default
linear.default log.default log1p.default log_softmax.int _log_softmax.default logical_and.default
logical_not.default logical_or.default logsumexp.default lt.Scalar lt.Tensor masked_fill.Scalar
masked_fill.Tensor matmul.default max.dim max.default max_pool1d.default max_pool2d.default
max_pool3d.default max_pool2d_with_indices.default max_pool3d_with_indices.default maximum.default
mean.dim mean.default minimum.default mish.default mm.default mul.Tensor mul.Scalar mv.default
ne.Scalar ne.Tensor neg.default new_ones.default new_zeros.default ones.default ones_like.default
pad.default permute.default pow.Tensor_Scalar pow.Tensor_Tensor pow.Scalar reciprocal.default
relu.default relu6.default repeat.default reshape.default rsqrt.default rsub.Scalar
scaled_dot_product_attention.default _scaled_dot_product_flash_attention_for_cpu.default
select.int sigmoid.default silu.default sin.default slice.Tensor softmax.int _softmax.default
softplus.default split.Tensor split_with_sizes.default sqrt.default square.default squeeze.dim
squeeze.dims squeeze.default stack.default sub.Tensor sub.Scalar sum.dim_IntList sum.default
sym_size.int sym_numel.default sym_stride.int sym_storage_offset.default t.default tanh.default
transpose.int tril.default triu.default type_as.default unbind.int unflatten.int unsqueeze.default
upsample_nearest2d.vec upsample_bilinear2d.vec var.correction view.default view_as.default
_unsafe_view.default where.self zeros.default zeros_like.default _to_copy.default to.dtype
lift_fresh_copy.default _assert_scalar.default _assert_tensor_metadata.default
sym_constrain_range_for_size.default
"""

#: Arithmetic and comparisons of symbolic sizes, and indexing of multi-output nodes.
_PYTHON = "getitem add sub mul floordiv truediv mod neg pow eq ne lt le gt ge and_ or_ not_"

#: Every operator a ``.pt2`` node may call, spelled as the archive spells targets.
ALLOWED_OPERATORS: frozenset[str] = frozenset(
    [f"torch.ops.aten.{name}" for name in _ATEN.split()]
    + [f"_operator.{name}" for name in _PYTHON.split()]
)

#: Operators that only a model exported in training mode calls (a clearer message than "not
#: allowed": export after ``model.eval()``).
TRAINING_OPERATORS = ("_native_batch_norm_legit_functional", "native_dropout")


class ProgramRefused(ValueError):
    """The program uses something outside the allow-lists (the message says what)."""


def _training(target: str) -> bool:
    return any(op in target for op in TRAINING_OPERATORS)


def _check_target(target: Any, where: str) -> None:
    if not isinstance(target, str) or target not in ALLOWED_OPERATORS:
        shown = str(target)[:120]
        if isinstance(target, str) and _training(target):
            raise ProgramRefused(f"training:{shown}")
        raise ProgramRefused(
            f"{where} calls {shown}, which is not on the list of pure tensor operators that "
            "GenScope accepts (no I/O, no in-place updates, no higher-order or custom operators)"
        )


# --- symbolic expressions and guards -------------------------------------------------------------

#: The names an expression may use: the functions torch's deserialiser offers to
#: ``sympy.sympify``, sympy's constructors of symbols and numbers as torch writes them
#: (``Symbol('s77', positive=True, integer=True)``) and their assumption keywords.
SYMPY_FUNCTIONS = frozenset(
    """FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv
    IntTrueDiv FloatTrueDiv TruncToInt RoundToInt ToFloat PowByNatural FloatPow Max Min Abs
    Eq Ne Lt Le Gt Ge And Or Not oo Symbol Integer Rational True False positive negative
    nonnegative nonpositive integer real finite""".split()  # noqa: SIM905 - a word list
)
_SYMBOL = re.compile(r"[a-z]{1,3}\d{1,9}")
_EXPR_TOKEN = re.compile(
    r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z_0-9]*)|'([a-z]{1,3}\d{1,9})'|(\*\*|[-+*/%(),<>=!]=?))"
)
MAX_EXPR_CHARS = 2000


def check_expression(text: Any, where: str) -> None:
    """A symbolic-shape expression: numbers, shape symbols (``s0``, ``u3``...), the functions
    of :data:`SYMPY_FUNCTIONS`, arithmetic and comparisons; nothing else (no attribute access,
    strings, brackets or keywords: ``sympify`` would evaluate them)."""
    if not isinstance(text, str) or len(text) > MAX_EXPR_CHARS:
        raise ProgramRefused(f"{where}: a symbolic expression that is not a short string")
    pos = 0
    while pos < len(text):
        match = _EXPR_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ProgramRefused(f"{where}: symbolic expression {text[:80]!r} is not arithmetic")
        name = match.group(2)
        if name is not None and name not in SYMPY_FUNCTIONS and not _SYMBOL.fullmatch(name):
            raise ProgramRefused(f"{where}: symbolic expression {text[:80]!r} names {name!r}")
        pos = match.end()


_GUARD_NODES = (
    ast.Expression,
    ast.Compare,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.FloorDiv,
    ast.Mod,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.Subscript,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Call,
    ast.Attribute,
)
_GUARD_METHODS = frozenset({"size", "stride", "dim", "numel", "storage_offset"})


def check_guard(code: Any, where: str) -> None:
    """A guard of ``guards_code`` (compiled into the module by torch): a comparison over input
    sizes such as ``L['x'].size()[1] == 3``, in a grammar of comparisons, arithmetic, integer
    and string constants, subscripts of ``L`` and the size methods of :data:`_GUARD_METHODS`."""
    if not isinstance(code, str) or len(code) > MAX_EXPR_CHARS:
        raise ProgramRefused(f"{where}: a guard that is not a short string")
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        raise ProgramRefused(f"{where}: guard {code[:80]!r} is not an expression") from None
    for node in ast.walk(tree):
        ok = isinstance(node, _GUARD_NODES)
        if isinstance(node, ast.Name):
            ok = node.id == "L"
        elif isinstance(node, ast.Constant):
            ok = type(node.value) in (int, str)
        elif isinstance(node, ast.Attribute):
            ok = node.attr in _GUARD_METHODS
        elif isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Attribute) and not node.args and not node.keywords
        if not ok:
            raise ProgramRefused(f"{where}: guard {code[:80]!r} is not a size comparison")


# --- the archive's JSON program ------------------------------------------------------------------


def _walk(value: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """``(path, key, value)`` of every dict entry in a JSON value, node metadata skipped (it is
    text for error messages and stack traces, resolved with ``getattr`` only)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "metadata":
                continue
            yield path, key, item
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for k, item in enumerate(value):
            yield from _walk(item, f"{path}[{k}]")


def check_program_json(program: Any, member: str) -> None:
    """Check one serialized ``ExportedProgram`` (an archive's ``models/*.json``).

    Raises:
        ProgramRefused: naming what is not allowed and where.
    """
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise ProgramRefused(f"{member}: not a serialized torch.export program")
    for guard in program.get("guards_code") or []:
        check_guard(guard, member)
    constraints = program.get("range_constraints") or {}
    if not isinstance(constraints, dict):
        raise ProgramRefused(f"{member}: range_constraints is not a mapping")
    for symbol in constraints:
        check_expression(symbol, f"{member} range_constraints")
    for path, key, value in _walk(program["graph_module"], member):
        if key == "nodes" and isinstance(value, list):
            for node in value:
                target = node.get("target") if isinstance(node, dict) else None
                _check_target(target, member)
        elif key == "as_operator":
            raise ProgramRefused(
                f"{member}: an operator ({str(value)[:120]}) is passed as an argument; "
                "GenScope accepts no operator-valued arguments"
            )
        elif key == "as_graph":
            raise ProgramRefused(f"{member}: a subgraph is passed as an argument (at {path})")
        elif key in ("as_custom_obj", "custom_obj_values") and value:
            raise ProgramRefused(f"{member}: the program holds a custom (TorchBind) object")
        elif key == "expr_str":
            check_expression(value, member)


# --- the loaded torch.fx graphs ------------------------------------------------------------------


def operator_name(target: Any) -> str:
    """A ``torch.fx`` call target spelled as in the archive (``torch.ops.aten.relu.default``,
    ``_operator.getitem``, ``torch.ops.higher_order.wrap``)."""
    if isinstance(target, torch._ops.OpOverload):
        return f"torch.ops.{target.namespace}.{target._opname}.{target._overloadname}"
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"torch.ops.higher_order.{target.__name__}"
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__name__', repr(target))}"


def _leaves(args: Any) -> Iterator[Any]:
    if isinstance(args, (list, tuple)):
        for item in args:
            yield from _leaves(item)
    elif isinstance(args, dict):
        for item in args.values():
            yield from _leaves(item)
    elif isinstance(args, slice):
        yield from _leaves((args.start, args.stop, args.step))
    else:
        yield args


def check_graph(graph_module: torch.fx.GraphModule, name: str) -> None:
    """Every node of every graph in ``graph_module`` calls an allowed operator with no
    operator- or module-valued argument.

    Raises:
        ProgramRefused: naming the node.
    """
    for owner in graph_module.modules():
        if owner is not graph_module and isinstance(owner, torch.fx.GraphModule):
            raise ProgramRefused(f"{name}: the program holds a subgraph ({type(owner).__name__})")
        graph = getattr(owner, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                pass
            elif node.op == "call_function":
                _check_target(operator_name(node.target), name)
            else:
                raise ProgramRefused(f"{name}: node {node.name} is a {node.op}; refused")
            for leaf in _leaves((node.args, node.kwargs)):
                if isinstance(leaf, torch.fx.Node) or not callable(leaf):
                    continue
                if isinstance(leaf, (torch.dtype, torch.device, torch.memory_format)):
                    continue
                raise ProgramRefused(
                    f"{name}: node {node.name} passes {operator_name(leaf)} as an argument; "
                    "GenScope accepts no operator-valued arguments"
                )
