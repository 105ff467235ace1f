"""Capturing one step of a PyTorch cell as an ATen graph.

The step runs once under `make_fx` on fake tensors (shapes only, no data, no arithmetic), with
in-place ops and aliasing removed by functionalization (`torch.func.functionalize`) and the
composite ops decomposed to the core ATen set (`torch._decomp.core_aten_decompositions`). The
module's parameters and buffers are lifted to graph inputs through `torch.func.functional_call`;
tensors the step closes over (a plain function's weights, `torch.tensor(...)` literals) appear as
`get_attr` constants of the graph that hold the user's own tensor objects.

The batch axis is traced at a sentinel size, `TRACE_BATCH`, a prime larger than any feature size
a cell uses: every dimension of that size in the graph is the batch axis, and shape arithmetic on
`x.size(0)` (`h.view(1, h.size(0), -1)`, `torch.zeros(x.size(0), n)`) keeps that meaning. This
costs a fraction of symbolic shapes (one ShapeEnv guard per broadcast) and gives the same graph.
The step is traced a second time at another prime, `CHECK_BATCH`, and the two graphs must agree
but for multiples of the batch in shapes: a step that uses the batch size as a value (`1 / B`,
`torch.arange(x.size(0))`, `torch.full(..., x.size(0))`) would otherwise have the sentinel baked
into its arithmetic, and gets an error naming its line instead.

Source lines: a TorchFunctionMode sees every torch call the step makes and records the innermost
frame of the user's code as the current stack trace (torch.fx.traceback's preserved node meta),
which every ATen node created meanwhile carries; errors name that line. (make_fx's own
`record_stack_traces` keeps only frames of functions named `forward` in recent versions, and
costs a full stack capture per node.) Only APIs present in torch 2.4 and later are used.
"""
from __future__ import annotations

import linecache
import os
import sys
import traceback

import torch

from . import _C
from ._errors import CellfuseError

TRACE_BATCH = 7919
CHECK_BATCH = 7927  # the next prime: a second trace that must give the same graph

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_DECOMPOSITIONS = None


def _is_user_file(filename: str) -> bool:
    name = os.path.abspath(filename)
    return not (name.startswith(_PACKAGE_DIR) or name.startswith(_TORCH_DIR) or filename.startswith("<"))


def user_line_of_frames(frames) -> str:
    """The innermost frame of the user's code among `frames` (traceback.FrameSummary), as
    file:line: text."""
    for frame in reversed(list(frames)):
        if _is_user_file(frame.filename):
            return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return "<unknown location>"


def user_line_of_node(node) -> str:
    """The user's source line that produced FX node `node` (from its recorded stack trace)."""
    text = node.meta.get("stack_trace") if node is not None else None
    if not text:
        return "<unknown location (this torch records no stack traces)>"
    lines = text.rstrip().splitlines()
    best = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith('File "'):
            filename = stripped[6:stripped.index('"', 6)]
            lineno = stripped.split(", line ")[1].split(",")[0] if ", line " in stripped else "?"
            code = lines[i + 1].strip() if i + 1 < len(lines) and not lines[i + 1].strip().startswith("File") else ""
            if _is_user_file(filename):
                best = f"{filename}:{lineno}: {code}"
    return best or "<unknown location>"


def _decompositions():
    global _DECOMPOSITIONS
    if _DECOMPOSITIONS is None:
        from torch._decomp import core_aten_decompositions
        table = dict(core_aten_decompositions())
        # Kept whole, so that the lowering sees them: dropout (to name it in the error),
        # softplus, log_sigmoid and mish too: their decompositions compute log(1 + exp(x)) as
        # written, which loses the digits of a small result in float32 (cellfuse's softplus
        # does not).
        aten = torch.ops.aten
        for packet in (aten.native_dropout, aten.softplus, aten.log_sigmoid_forward, aten.mish):
            for name in packet.overloads():
                table.pop(getattr(packet, name), None)
        # And the pointwise ops of cellfuse's op table (cellfuse._C.op_table()): they lower to it.
        native = {n for op in _C.op_table() if op["pointwise"] and op["unary"] for n in op["torch"]}
        for op in [op for op in table if getattr(getattr(op, "overloadpacket", None), "__name__", None) in native]:
            table.pop(op)
        # On CUDA tensors nn.LSTMCell and nn.GRUCell call fused CUDA-only kernels, which
        # core_aten_decompositions leaves whole (on the CPU they decompose to pointwise ops).
        table[aten._thnn_fused_lstm_cell.default] = _fused_lstm_cell
        table[aten._thnn_fused_gru_cell.default] = _fused_gru_cell
        _DECOMPOSITIONS = table
    return _DECOMPOSITIONS


def _fused_lstm_cell(input_gates, hidden_gates, cx, input_bias=None, hidden_bias=None):
    """aten._thnn_fused_lstm_cell: the gate sums (i, f, g, o) -> (hy, cy, workspace); the
    workspace (the activated gates, for the fused backward) is never read by a traced step."""
    gates = input_gates + hidden_gates
    if input_bias is not None:
        gates = gates + input_bias
    if hidden_bias is not None:
        gates = gates + hidden_bias
    i, f, g, o = gates.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    cy = f * cx + i * g
    hy = o * torch.tanh(cy)
    return hy, cy, torch.cat([i, f, g, o], dim=1)


def _fused_gru_cell(input_gates, hidden_gates, hx, input_bias=None, hidden_bias=None):
    """aten._thnn_fused_gru_cell: x and h products (r, z, n each) -> (hy, workspace); the reset
    gate scales the hidden side of n only, as nn.GRUCell defines it."""
    if input_bias is not None:
        input_gates = input_gates + input_bias
    if hidden_bias is not None:
        hidden_gates = hidden_gates + hidden_bias
    ir, iz, in_ = input_gates.chunk(3, dim=1)
    hr, hz, hn = hidden_gates.chunk(3, dim=1)
    r = torch.sigmoid(ir + hr)
    z = torch.sigmoid(iz + hz)
    n = torch.tanh(in_ + r * hn)
    hy = n + z * (hx - n)
    return hy, torch.cat([r, z, in_, hn, hx], dim=1)


def _data_dependent(error) -> bool:
    names = {type(error).__name__} | {t.__name__ for t in type(error).__mro__}
    text = str(error)
    return bool(names & {"DataDependentOutputException", "GuardOnDataDependentSymNode",
                         "DynamicOutputShapeException", "UnsupportedOperatorException"}) and (
        "_local_scalar_dense" in text or "DataDependent" in " ".join(names) or "nonzero" in text
        or "data-dependent" in text.lower())


def _qualified(func):
    module = getattr(func, "__module__", None) or ""
    qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    qual = qual.replace("TensorBase.", "Tensor.").replace("_VariableFunctionsClass.", "")
    if module.startswith("torch._C") or not module:
        module = "torch"
    return f"{module}.{qual}"


def _user_frame_text():
    frame = sys._getframe(2)
    while frame is not None and not _is_user_file(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return None
    filename, lineno = frame.f_code.co_filename, frame.f_lineno
    code = linecache.getline(filename, lineno).strip()
    return f'  File "{filename}", line {lineno}, in {frame.f_code.co_name}\n    {code}\n'


def _naming_mode():
    """A TorchFunctionMode that records the user's line of every torch call as the stack trace of
    the nodes it creates, and tags an exception with the torch function it escaped from (the
    innermost one), so that a capture error names the op the user called."""
    from torch.fx import traceback as fx_traceback
    from torch.overrides import TorchFunctionMode

    class Naming(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            text = _user_frame_text()
            if text is not None:
                fx_traceback.set_stack_trace([text])
            try:
                return func(*args, **(kwargs or {}))
            except Exception as e:  # noqa: BLE001 -- re-raised unchanged
                if getattr(e, "_cellfuse_op", None) is None:
                    try:
                        e._cellfuse_op = _qualified(func)
                    except AttributeError:
                        pass
                raise

    return Naming()


def _has_mutations(gm) -> bool:
    for node in gm.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op == "call_function" and schema is not None and schema.is_mutable:
            if node.target.overloadpacket.__name__ != "copy_":  # writes back to an input: kept
                return True
    return False


def _readable(text: str) -> str:
    return text.replace(str(TRACE_BATCH), "B")


def trace_step(fn, module, param_names, param_tensors, make_args):
    """make_fx graph of the step: the lifted module tensors first (as placeholders), then the
    flattened step arguments, which `make_args(batch)` creates (under the fake mode) at their traced
    shapes. `module` is the nn.Module whose tensors are lifted (None: nothing is lifted). Traced at
    TRACE_BATCH and checked against a trace at CHECK_BATCH (see the module's docstring)."""
    gm = _trace_once(fn, module, param_names, param_tensors, lambda: make_args(TRACE_BATCH))
    check = _trace_once(fn, module, param_names, param_tensors, lambda: make_args(CHECK_BATCH))
    leak = _batch_dependent_node(gm, check)
    if leak is not None:
        raise CellfuseError("the step uses the batch size as a number (for example 1 / x.size(0), "
                            "torch.arange(x.size(0)), or a shape that is not the batch times a constant): "
                            "cellfuse compiles one step for every batch size, so the batch size may only "
                            f"give the batch axis its length (in {_readable(leak.format_node() or str(leak))})"
                            f"\n  at {user_line_of_node(leak)}")
    return gm


def _same_arg(a, b, nodes):
    """Whether argument `a` of the TRACE_BATCH graph matches `b` of the CHECK_BATCH graph: the same
    node (by position), the same constant, or the same multiple of the batch."""
    if isinstance(a, torch.fx.Node) or isinstance(b, torch.fx.Node):
        return isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node) and nodes.get(a) is b
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same_arg(x, y, nodes) for x, y in zip(a, b)))
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
                and all(_same_arg(a[k], b[k], nodes) for k in a))
    if type(a) is int and type(b) is int and a != b:
        return a % TRACE_BATCH == 0 and b % CHECK_BATCH == 0 and a // TRACE_BATCH == b // CHECK_BATCH
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # both NaN
    return type(a) is type(b) and a == b


def _batch_dependent_node(gm, check):
    """The first node of `gm` (traced at TRACE_BATCH) whose op, arguments or constant differs in
    `check` (traced at CHECK_BATCH) beyond multiples of the batch; None when they agree."""
    mine, theirs = list(gm.graph.nodes), list(check.graph.nodes)
    nodes = {}
    for a, b in zip(mine, theirs):
        if a.op != b.op or a.target != b.target or not _same_arg(a.args, b.args, nodes) \
                or not _same_arg(dict(a.kwargs), dict(b.kwargs), nodes):
            return a
        if a.op == "get_attr":
            x, y = getattr(gm, a.target, None), getattr(check, b.target, None)
            if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
                if x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y):
                    return a
        nodes[a] = b
    if len(mine) != len(theirs):
        return mine[min(len(mine), len(theirs)) - 1] if mine else None
    return None


def _trace_once(fn, module, param_names, param_tensors, make_args):
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        args = make_args()
    flat_args, spec = torch.utils._pytree.tree_flatten(args)
    count = len(param_names)

    def step(*flat):
        step_args = torch.utils._pytree.tree_unflatten(list(flat[count:]), spec)
        with _naming_mode():
            if module is not None and count:
                params = dict(zip(param_names, flat[:count]))
                return torch.func.functional_call(module, params, tuple(step_args))
            return fn(*step_args)

    from torch.fx import traceback as fx_traceback
    fake = [mode.from_tensor(t) for t in param_tensors] + flat_args
    try:
        with mode, fx_traceback.preserve_node_meta():
            gm = make_fx(torch.func.functionalize(step, remove="mutations"),
                         decomposition_table=_decompositions())(*fake)
            if _has_mutations(gm):
                # Python decompositions run below functionalization (nn.LSTMCell's lstm_cell uses
                # add_): functionalize the captured graph once more.
                gm = make_fx(torch.func.functionalize(gm, remove="mutations"),
                             decomposition_table=_decompositions())(*fake)
            return gm
    except CellfuseError as e:
        if "\n  at " in str(e):
            raise
        where = user_line_of_frames(traceback.extract_tb(e.__traceback__))
        raise CellfuseError(f"{e}\n  at {where}") from None
    except Exception as e:  # noqa: BLE001 -- every capture failure becomes one clear error
        where = user_line_of_frames(traceback.extract_tb(e.__traceback__))
        op = getattr(e, "_cellfuse_op", None)
        if _data_dependent(e) or (op or "").endswith("__bool__"):
            raise CellfuseError("data-dependent control flow or value: the step turns a tensor into a Python "
                                "value (`if tensor:`, .item(), .all(), .tolist(), a data-dependent shape), "
                                "which is only known when the cell runs; use torch.where instead of `if`"
                                f"\n  at {where}") from None
        text = str(e).strip()
        first = _readable(text.splitlines()[0]) if text else type(e).__name__
        raise CellfuseError(f"{op + ': ' if op else ''}{first} (capturing the step: {type(e).__name__}; the "
                            f"batch axis shows as B)\n  at {where}") from None
