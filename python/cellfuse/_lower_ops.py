"""The handlers of _lower.py: one per core ATen op a per-step value may meet.

Each takes the lowerer, the FX node and its lowered arguments (Batched, Unbatched, numbers) and
returns the node's value. Pointwise ops align their operands to the result's shape
(`broadcast_to`); reductions and normalizations over feature axes work per segment (one segment
when they cover every feature axis, as in a (B, n) cell); layout ops relabel or index.
"""
from __future__ import annotations

import math

import torch
import torch.fx

from . import _C
from ._errors import CellfuseError
from ._lower import HANDLERS, handles, op_name
from ._values import Batched, RowGroups, Unbatched, broadcast_to, describe, gather, index_tensor, relabel


# -- pointwise -------------------------------------------------------------------------------

def _operands(lw, node, *values):
    dims = lw.out_dims(node)
    return dims, [broadcast_to(v, dims, lw.feed) for v in values]


def _result(lw, node, val, dims):
    return Batched(val, dims, lw.check_boolean(node))


def _column(lw, v, like):
    """A number as an IR value shaped like `like` (for ops without number overloads)."""
    return _C.constant_like(like, v) if isinstance(v, float) else v


def _unary(fn):
    def handler(lw, node, x, *args, **kwargs):
        dims, (v,) = _operands(lw, node, x)
        return _result(lw, node, fn(v, *args, **kwargs), dims)
    return handler


_UNARY = {
    "reciprocal": lambda v: _C.div(1.0, v),
    "sign": lambda v: _C.sub(_C.greater(v, _C.constant_like(v, 0.0)), _C.less(v, _C.constant_like(v, 0.0))),
    "logical_not": lambda v: _C.sub(1.0, _ne_zero(v)),
    "bitwise_not": lambda v: _C.sub(1.0, v),
    "hardswish": lambda v: _C.mul(v, _clamp(_C.add(_C.div(v, 6.0), 0.5), 0.0, 1.0)),
    "silu": lambda v: _C.mul(v, _C.sigmoid(v)),
    "mish": lambda v: _C.mul(v, _C.tanh(_C.softplus(v))),
    "log_sigmoid_forward": None,
}
# Every unary pointwise op of the op table (compiler/ir/ops.def, cellfuse._C.op_table()) under its
# torch names: sigmoid, tanh, relu, exp, log, sqrt, rsqrt, abs, erf, neg, ...
_UNARY.update({n: getattr(_C, op["name"])
               for op in _C.op_table() if op["pointwise"] and op["unary"] for n in op["torch"]})
for _name, _fn in _UNARY.items():
    if _fn is not None:
        HANDLERS[_name] = _unary(_fn)


def _ne_zero(v):
    zero = _C.constant_like(v, 0.0)
    return _C.sub(1.0, _C.mul(_C.greater_equal(v, zero), _C.less_equal(v, zero)))


def _clamp(v, lo, hi):
    if lo is not None:
        v = _C.maximum(v, _C.constant_like(v, float(lo)))
    if hi is not None:
        v = _C.minimum(v, _C.constant_like(v, float(hi)))
    return v


@handles("log_sigmoid_forward")
def _log_sigmoid(lw, node, x):  # (output, buffer): the buffer only serves PyTorch's backward
    dims = lw.out_dims(node, node.meta["val"][0])
    v = broadcast_to(x, dims, lw.feed)
    y = _C.neg(_C.softplus(_C.neg(v)))
    return (Batched(y, dims), Batched(y, dims))


@handles("softplus")
def _softplus(lw, node, x, beta=1.0, threshold=20.0):
    dims, (v,) = _operands(lw, node, x)
    if beta == 1:
        return Batched(_C.softplus(v), dims)
    return Batched(_C.div(_C.softplus(_C.mul(v, float(beta))), float(beta)), dims)


@handles("gelu")
def _gelu(lw, node, x, approximate="none"):
    dims, (v,) = _operands(lw, node, x)
    if approximate == "none":
        return Batched(_C.mul(_C.mul(v, 0.5), _C.add(_C.erf(_C.mul(v, 0.7071067811865476)), 1.0)), dims)
    inner = _C.mul(_C.add(v, _C.mul(_C.mul(_C.mul(v, v), v), 0.044715)), math.sqrt(2.0 / math.pi))
    return Batched(_C.mul(_C.mul(v, 0.5), _C.add(_C.tanh(inner), 1.0)), dims)


@handles("leaky_relu")
def _leaky_relu(lw, node, x, negative_slope=0.01):
    dims, (v,) = _operands(lw, node, x)
    return Batched(_C.sub(_C.relu(v), _C.mul(_C.relu(_C.neg(v)), float(negative_slope))), dims)


@handles("elu")
def _elu(lw, node, x, alpha=1.0, scale=1.0, input_scale=1.0):
    dims, (v,) = _operands(lw, node, x)
    neg = _C.mul(_C.sub(_C.exp(_C.mul(_C.minimum(v, _C.constant_like(v, 0.0)), float(input_scale))), 1.0),
                 float(alpha))
    return Batched(_C.mul(_C.add(_C.relu(v), neg), float(scale)), dims)


@handles("hardtanh")
def _hardtanh(lw, node, x, min_val=-1.0, max_val=1.0):
    dims, (v,) = _operands(lw, node, x)
    return Batched(_clamp(v, min_val, max_val), dims)


@handles("clamp", "clip")
def _clamp_op(lw, node, x, min=None, max=None):
    dims, (v, lo, hi) = _operands(lw, node, x, *(0.0 if b is None else b for b in (min, max)))
    if min is not None:
        v = _C.maximum(v, _column(lw, lo, v))
    if max is not None:
        v = _C.minimum(v, _column(lw, hi, v))
    return Batched(v, dims)


@handles("clamp_min")
def _clamp_min(lw, node, x, lo):
    return _clamp_op(lw, node, x, min=lo)


@handles("clamp_max")
def _clamp_max(lw, node, x, hi):
    return _clamp_op(lw, node, x, max=hi)


def _binary(fn, swap=False):
    def handler(lw, node, a, b, *, alpha=1, rounding_mode=None):
        if rounding_mode is not None:
            raise CellfuseError(f"rounding_mode={rounding_mode!r} is not supported in a cell")
        dims, (va, vb) = _operands(lw, node, a, b)
        if alpha != 1:
            vb = vb * float(alpha) if isinstance(vb, float) else _C.mul(vb, float(alpha))
        if swap:
            va, vb = vb, va
        if isinstance(va, float) and isinstance(vb, float):
            va = lw.constant(va, math.prod(d for d in dims if d is not None))
        return _result(lw, node, fn(va, vb), dims)
    return handler


HANDLERS.update({"add": _binary(_C.add), "sub": _binary(_C.sub), "rsub": _binary(_C.sub, swap=True),
                 "mul": _binary(_C.mul), "div": _binary(_C.div)})


def _pair(fn):
    def handler(lw, node, a, b):
        dims, (va, vb) = _operands(lw, node, a, b)
        like = va if not isinstance(va, float) else vb
        return _result(lw, node, fn(_column(lw, va, like), _column(lw, vb, like)), dims)
    return handler


def _eq(a, b):
    return _C.mul(_C.greater_equal(a, b), _C.less_equal(a, b))


HANDLERS.update({
    "maximum": _pair(_C.maximum), "minimum": _pair(_C.minimum), "fmax": _pair(_C.maximum),
    "fmin": _pair(_C.minimum), "gt": _pair(_C.greater), "ge": _pair(_C.greater_equal), "lt": _pair(_C.less),
    "le": _pair(_C.less_equal), "eq": _pair(_eq), "ne": _pair(lambda a, b: _C.sub(1.0, _eq(a, b))),
    "logical_and": _pair(lambda a, b: _C.mul(_ne_zero(a), _ne_zero(b))),
    "logical_or": _pair(lambda a, b: _C.maximum(_ne_zero(a), _ne_zero(b))),
    "bitwise_and": _pair(_C.mul), "bitwise_or": _pair(_C.maximum),
})


@handles("where")
def _where(lw, node, cond, a, b):
    dims, (vc, va, vb) = _operands(lw, node, cond, a, b)
    like = next(v for v in (vc, va, vb) if not isinstance(v, float))
    return _result(lw, node, _C.where(*(_column(lw, v, like) for v in (vc, va, vb))), dims)


@handles("pow")
def _pow(lw, node, x, exponent):
    dims = lw.out_dims(node)
    if isinstance(x, (int, float)):  # number ** tensor
        (v,) = [broadcast_to(exponent, dims, lw.feed)]
        return Batched(_C.exp(_C.mul(v, math.log(float(x)))), dims)
    if not isinstance(exponent, (int, float)):
        raise CellfuseError("pow: only a number exponent is supported in a cell")
    v = broadcast_to(x, dims, lw.feed)
    e = float(exponent)
    if e == int(e) and 0 <= e <= 8:
        out = _C.constant_like(v, 1.0) if e == 0 else v
        for _ in range(int(e) - 1):
            out = _C.mul(out, v)
        return Batched(out, dims)
    table = {0.5: _C.sqrt, -0.5: _C.rsqrt, -1.0: lambda t: _C.div(1.0, t), -2.0: lambda t: _C.div(1.0, _C.mul(t, t))}
    if e in table:
        return Batched(table[e](v), dims)
    return Batched(_C.exp(_C.mul(_C.log(v), e)), dims)  # NaN for negative bases, as PyTorch


@handles("masked_fill")
def _masked_fill(lw, node, x, mask, value):
    dims, (vx, vm, vv) = _operands(lw, node, x, mask, value)
    return Batched(_C.where(_column(lw, vm, vx), _column(lw, vv, vx), vx), dims)


@handles("_to_copy", "to")
def _to_copy(lw, node, x, *args, dtype=None, **kwargs):
    dims, (v,) = _operands(lw, node, x)
    target = node.meta["val"].dtype
    if target == torch.bool:
        return Batched(v if x.boolean else _ne_zero(v), dims, True)
    if not target.is_floating_point:
        raise CellfuseError(f"conversion to {target} inside a cell is not supported")
    sixteen = (torch.float32, torch.bfloat16, torch.float16)
    allowed = set(sixteen) if lw.example_dtype in sixteen[1:] else {lw.example_dtype}
    if target not in allowed and not x.boolean:
        raise CellfuseError(f"conversion to {target} inside a {lw.example_dtype} cell is not supported")
    return Batched(v, dims)


@handles("native_dropout")
def _dropout(lw, node, x, p, train):
    if train and p > 0:
        raise CellfuseError("dropout inside the cell is not supported in training mode: use the dropout between "
                            "layers (cellfuse.compile(..., dropout=p)) or put the module in eval()")
    return (x, x)


# -- layout ------------------------------------------------------------------------------------

@handles("alias", "clone", "detach", "lift_fresh_copy", "contiguous", "_assert_tensor_metadata")
def _same(lw, node, x, *args, **kwargs):
    return x


@handles("view", "_unsafe_view", "reshape", "view_copy", "_reshape_alias", "unsqueeze", "squeeze")
def _view(lw, node, x, *args, **kwargs):
    """A reshape keeps the features' order when as many elements come before the batch axis as
    before (then it only relabels); anything else would mix batch rows."""
    if isinstance(x, RowGroups):
        return _view_of_row_groups(lw, node, x)
    merged = _merged_rows(node, x)
    if merged is not None:
        return merged
    dims = lw.out_dims(node)
    before_in = math.prod(d for d in x.dims[:x.bpos])
    before_out = math.prod(d for d in dims[:dims.index(None)])
    if before_in != before_out:
        raise CellfuseError(f"{op_name(node.target)} from {describe(x.dims)} to {describe(dims)} mixes the batch "
                            "axis with other axes: a reshape must keep the batch axis whole (only the other "
                            "axes may be regrouped, or size-1 axes added or removed around it)")
    return Batched(x._val, dims, x.boolean, x.source, x.positions)


def _merged_rows(node, x):
    """x.view(B * G, ...) of a value (B, a1, .., ak, ...) with a1 * .. * ak = G: RowGroups."""
    from ._fx_capture import TRACE_BATCH
    shape = [int(d) for d in node.meta["val"].shape]
    if TRACE_BATCH in shape or not shape or shape[0] % TRACE_BATCH or any(d != 1 for d in x.dims[:x.bpos]):
        return None
    groups = shape[0] // TRACE_BATCH
    width = math.prod(shape[1:])
    if groups * width != x.features:
        return None
    return RowGroups(x, groups, width)


def _view_of_row_groups(lw, node, x):
    dims = lw.out_dims(node)
    if math.prod(d for d in dims[:dims.index(None)]) != 1:
        raise CellfuseError(f"{op_name(node.target)}: the view back from merged rows must put the batch axis first")
    if tuple(int(d) for d in node.meta["val"].shape[:1]) == ():
        raise CellfuseError("cellfuse internal: empty view")
    return Batched(x.value._val, dims, x.value.boolean, x.value.source, x.value.positions)


def _index_map(lw, node, x, *args, **kwargs):
    """A layout op on a per-step value: the same op applied to its feature positions."""
    dims = lw.out_dims(node)
    positions = node.target(index_tensor(x.dims), *_no_batch(args), **kwargs)
    return relabel(x, positions.reshape(-1).tolist(), dims)


def _no_batch(args):
    from ._fx_capture import TRACE_BATCH
    if isinstance(args, (list, tuple)):
        return type(args)(_no_batch(a) for a in args)
    return 1 if isinstance(args, int) and args == TRACE_BATCH else args


@handles("permute", "t", "transpose", "expand", "flip", "repeat", "roll")
def _reorder(lw, node, x, *args, **kwargs):
    if isinstance(x, Unbatched):
        raise CellfuseError(f"{op_name(node.target)} of a parameter-side tensor into a per-step shape")
    return _index_map(lw, node, x, *args, **kwargs)


def _batch_axis_arg(x, dim, op):
    if x.dims[dim] is None:
        raise CellfuseError(f"{op}: dim={dim} is the batch axis of a value of shape {describe(x.dims)}: the batch "
                            "axis must stay whole (slice, split and join the other axes)")


@handles("slice")
def _slice(lw, node, x, dim=0, start=None, end=None, step=1):
    if x.dims[dim] is None:
        if (start in (None, 0)) and (end is None or end >= 2**62 or end == x_batch()) and step == 1:
            return x
        _batch_axis_arg(x, dim, "slicing")
    return _index_map(lw, node, x, dim, start, end, step)


def x_batch():
    from ._fx_capture import TRACE_BATCH
    return TRACE_BATCH


@handles("select", "narrow", "index_select")
def _select(lw, node, x, dim, *args):
    _batch_axis_arg(x, dim, op_name(node.target))
    if any(isinstance(a, (Batched, Unbatched)) for a in args):
        raise CellfuseError(f"{op_name(node.target)} with tensor indices is not supported in a cell")
    return _index_map(lw, node, x, dim, *args)


@handles("split", "split_with_sizes", "unbind", "chunk", "tensor_split")
def _split(lw, node, x, *args, **kwargs):
    dim = kwargs.get("dim", args[1] if len(args) > 1 else (args[0] if node.target.overloadpacket.__name__ == "unbind"
                                                            and args else 0))
    _batch_axis_arg(x, dim, op_name(node.target))
    pieces = node.target(index_tensor(x.dims), *_no_batch(args), **kwargs)
    metas = node.meta["val"]
    return tuple(relabel(x, p.reshape(-1).tolist(), lw.out_dims(node, m)) for p, m in zip(pieces, metas))


@handles("cat", "concat", "stack")
def _cat(lw, node, tensors, dim=0):
    dims = lw.out_dims(node)
    rank = len(dims)
    axis = dim if dim >= 0 else dim + rank
    if node.target.overloadpacket.__name__ == "stack":
        raise CellfuseError("torch.stack inside a cell: stack per-step values along a new feature axis with "
                            "unsqueeze and cat")
    if dims[axis] is None:
        raise CellfuseError(f"cat along dim={dim}, the batch axis of {describe(dims)}: a cell joins along the other "
                            "axes")
    vals, positions, offset = [], [], 0
    for t in tensors:
        if isinstance(t, Batched):
            part_dims = t.dims
            val = t.val
        else:
            shape = tuple(t.shape)
            part_dims = tuple(None if i == dims.index(None) else s for i, s in enumerate(shape))
            val = lw.broadcast_param(t, part_dims)
        count = math.prod(d for d in part_dims if d is not None)
        if count == 0:
            continue
        vals.append(val)
        positions.append(index_tensor(part_dims) + offset)
        offset += count
    joined = vals[0] if len(vals) == 1 else _C.cat(vals)
    order = torch.cat(positions, axis).reshape(-1).tolist()
    return relabel(Batched(joined, (None, offset)), order, dims, lw.check_boolean(node))


@handles("slice_scatter", "select_scatter", "copy", "index_put")
def _scatter(lw, node, base, src, *args, **kwargs):
    """What functionalization makes of an in-place op on a view (g[:, 4:].relu_()): base with
    the view's elements replaced by src; an index map over base's and src's features."""
    dims = lw.out_dims(node)
    packet = node.target.overloadpacket.__name__
    if packet == "index_put":
        raise CellfuseError("assignment through tensor indices is not supported in a cell")
    if not isinstance(base, Batched):
        raise CellfuseError(f"{op_name(node.target)}: an in-place change of a parameter-side tensor by a per-step "
                            "value")
    if packet == "copy":  # base's shape, src's values (broadcast)
        if isinstance(src, (int, float)):
            return Batched(lw.constant(src, base.features), dims, base.boolean)
        v = broadcast_to(src, dims, lw.feed)
        if isinstance(v, float):
            return Batched(lw.constant(v, base.features), dims, base.boolean)
        if not v.batched:
            v = _C.broadcast(v)
            v = v if v.features == base.features else _C.expand(v, base.features)
        return Batched(v, dims, base.boolean)
    src_meta = node.args[1].meta["val"] if isinstance(node.args[1], torch.fx.Node) else None
    if isinstance(src, Batched):
        src_dims, src_val = src.dims, src.val
    else:
        src_dims = tuple(None if i == base.bpos else int(d) for i, d in enumerate(src_meta.shape))
        src_val = lw.broadcast_param(src, src_dims)
    if args and isinstance(args[0], int) and base.dims[args[0]] is None:
        _batch_axis_arg(base, args[0], op_name(node.target))
    both = _C.cat([base.val, src_val])
    positions = node.target(index_tensor(base.dims), index_tensor(src_dims) + base.features, *_no_batch(args),
                            **kwargs)
    return relabel(Batched(both, (None, both.features)), positions.reshape(-1).tolist(), dims, base.boolean)


# -- products ------------------------------------------------------------------------------------

_TRANSPOSES = ("permute", "t", "transpose", "numpy_T")


def _transposed_weight(lw, u):
    """W when `u` is W.t() (a 2-D transpose of a parameter-side tensor), else None."""
    node = u.node
    if node.op != "call_function" or len(u.shape) != 2:
        return None
    name = node.target.overloadpacket.__name__ if hasattr(node.target, "overloadpacket") else ""
    if name not in _TRANSPOSES:
        return None
    if name == "permute" and list(node.args[1]) != [1, 0]:
        return None
    source = lw.env.get(node.args[0])
    return source if isinstance(source, Unbatched) and len(source.shape) == 2 else None


def _grouped_product(lw, node, a, b, bias=None):
    """A product of merged rows (x.view(B * heads, d) @ W): one product per group, joined."""
    if not isinstance(b, Unbatched) or len(b.shape) != 2 or b.shape[0] != a.width:
        raise CellfuseError(f"{op_name(node.target)}: merged rows (x.view(B * heads, d)) times a weight of "
                            f"{a.width} rows only")
    W = _transposed_weight(lw, b)
    v = a.value.val
    parts = []
    for g in range(a.groups):
        rows = v if a.groups == 1 else _C.slice(v, g * a.width, a.width)
        part = _C.linear(rows, lw.matrix(W)) if W is not None else _C.matmul(rows, lw.matrix(b))
        if bias is not None:
            bv = broadcast_to(bias, (None, part.features), lw.feed)
            part = _C.add(part, bv)
        parts.append(part)
    joined = parts[0] if len(parts) == 1 else _C.cat(parts)
    out = Batched(joined, (None, joined.features))
    return RowGroups(out, a.groups, joined.features // a.groups)


def _product(lw, node, a, b):
    if isinstance(a, RowGroups):
        return _grouped_product(lw, node, a, b)
    dims = lw.out_dims(node)
    if isinstance(a, Batched) and isinstance(b, Unbatched) and a.bpos == 0:
        W = _transposed_weight(lw, b)
        val = _C.linear(a.val, lw.matrix(W)) if W is not None else _C.matmul(a.val, lw.matrix(b))
        return Batched(val, dims)
    if isinstance(a, Unbatched) and isinstance(b, Batched) and b.bpos == 1:  # W @ h with h (n, B)
        return Batched(_C.linear(b.val, lw.matrix(a)), dims)
    raise CellfuseError(f"{op_name(node.target)}: cellfuse supports value @ weight (and weight @ value with the "
                        "batch as the value's last axis), with the weight a parameter or computed from "
                        "parameters; not a product of two per-step values")


@handles("mm", "matmul")
def _mm(lw, node, a, b):
    return _product(lw, node, a, b)


@handles("addmm")
def _addmm(lw, node, bias, a, b, *, beta=1, alpha=1):
    if isinstance(a, RowGroups):
        if beta != 1 or alpha != 1:
            raise CellfuseError("addmm with alpha or beta on merged rows is not supported in a cell")
        return _grouped_product(lw, node, a, b, bias)
    prod = _product(lw, node, a, b)
    val = prod.val if alpha == 1 else _C.mul(prod.val, float(alpha))
    bv = broadcast_to(bias, prod.dims, lw.feed)
    if beta != 1:
        bv = bv * float(beta) if isinstance(bv, float) else _C.mul(bv, float(beta))
    return Batched(_C.add(val, bv), prod.dims)


@handles("bmm")
def _bmm(lw, node, a, b):
    """einsum("bi,ij->bj", x, W) runs as bmm of x.view(1, B, i) and W.view(1, i, j)."""
    if isinstance(a, Batched) and isinstance(b, Unbatched) and a.dims[0] == 1 and a.bpos == 1 \
            and len(a.dims) == 3 and len(b.shape) == 3 and b.shape[0] == 1:
        K, N = b.shape[1], b.shape[2]
        W = lw.feed(b, lambda t, K=K, N=N: t.reshape(K, N), (K, N), key="bmm")
        return Batched(_C.matmul(a.val, W), lw.out_dims(node))
    raise CellfuseError(f"{op_name(node.target)} on per-step values is not supported in a cell (products are "
                        "value @ weight with a 2-D weight)")


@handles("full_like", "zeros_like", "ones_like", "new_full", "new_zeros", "new_ones")
def _constant_like(lw, node, x, *args, **kwargs):
    packet = node.target.overloadpacket.__name__
    value = {"zeros_like": 0.0, "ones_like": 1.0, "new_zeros": 0.0, "new_ones": 1.0}.get(packet)
    if value is None:
        value = args[0] if packet == "full_like" else args[1]
    dims = lw.out_dims(node)
    return Batched(lw.constant(float(value), math.prod(d for d in dims if d is not None)), dims,
                   lw.check_boolean(node))


@handles("baddbmm", "einsum", "linear")
def _unsupported_product(lw, node, *args, **kwargs):
    raise CellfuseError(f"{op_name(node.target)} on per-step values is not supported in a cell (products are "
                        "value @ weight with a 2-D weight)")


from . import _lower_reduce  # noqa: E402,F401  (reductions and normalizations)
