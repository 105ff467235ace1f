"""Reductions and normalizations over feature axes, lowered from existing cellfuse ops.

The reduced axes are gathered to the end of the features (an index map, free when they already
are), then each segment (one per index of the kept feature axes: one segment for a (B, n) value,
`heads` for a (B, heads, d) value reduced over d) is reduced with the IR's feature-axis `sum` /
`mean`, and the results joined. max/min reductions are a tree of elementwise maxima over halves
(log2(n) ops, exact; cellfuse's own feature-axis max is used where the IR has one). var/std are
centred sums of squares; softmax, log_softmax and logsumexp subtract the maximum first, as PyTorch
does. A reduction over the batch axis is an error.
"""
from __future__ import annotations

import math

import torch

from . import _C
from ._errors import CellfuseError
from ._lower import HANDLERS, handles, op_name
from ._values import Batched, broadcast_to, describe, index_tensor, relabel, take


def _axes(x, dim, op):
    rank = len(x.dims)
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        axes = list(range(rank))
    else:
        axes = [dim] if isinstance(dim, int) else list(dim)
    axes = sorted({a % rank for a in axes})
    if x.bpos in axes:
        raise CellfuseError(f"{op} over the batch axis of a value of shape {describe(x.dims)}: a cell reduces "
                            "over its other axes only")
    return axes


def _segments(x, axes):
    """x's features with `axes` last, as [B, r] IR values, one per index of the kept axes."""
    kept = [i for i, d in enumerate(x.dims) if d is not None and i not in axes]
    r = math.prod(x.dims[i] for i in axes)
    k = math.prod(x.dims[i] for i in kept)
    order = index_tensor(x.dims).permute([x.bpos] + kept + list(axes)).reshape(-1).tolist()
    v = take(x, order)
    return ([v] if k == 1 else [_C.slice(v, i * r, r) for i in range(k)]), order, r


def _reduced(lw, x, axes, per_segment, dims):
    segments, _, r = _segments(x, axes)
    outs = [per_segment(s, r) for s in segments]
    return Batched(outs[0] if len(outs) == 1 else _C.cat(outs), dims)


def _mapped(x, axes, per_segment):
    """per_segment ([B, r] -> [B, r]) over every segment, the features back in x's order."""
    segments, order, r = _segments(x, axes)
    outs = [per_segment(s, r) for s in segments]
    joined = outs[0] if len(outs) == 1 else _C.cat(outs)
    inverse = [0] * len(order)
    for j, p in enumerate(order):
        inverse[p] = j
    return relabel(Batched(joined, (None, joined.features)), inverse, x.dims, False)


def _tree(v, fn):
    n = v.features
    while n > 1:
        h = n // 2
        r = fn(_C.slice(v, 0, h), _C.slice(v, h, h))
        if n % 2:
            r = _C.cat([r, _C.slice(v, 2 * h, 1)])
        v, n = r, h + n % 2
    return v


def amax(v):
    native = getattr(_C, "amax", None)
    return native(v) if native is not None else _tree(v, _C.maximum)


def amin(v):
    return _C.neg(amax(_C.neg(v)))


def _variance(s, r, correction):
    d = _C.sub(s, _C.mean(s))
    return _C.div(_C.sum(_C.mul(d, d)), float(r - correction))


def _logsumexp(s):
    m = amax(s)
    return _C.add(_C.log(_C.sum(_C.exp(_C.sub(s, m)))), m)


def _reduction(per_segment):
    def handler(lw, node, x, dim=None, keepdim=False, *args, dtype=None, **kwargs):
        if isinstance(dim, bool):  # sum(x, dtype) spelled positionally never reaches here; guard anyway
            dim = None
        axes = _axes(x, dim, op_name(node.target))
        return _reduced(lw, x, axes, per_segment, lw.out_dims(node))
    return handler


HANDLERS.update({
    "sum": _reduction(lambda s, r: _C.sum(s)),
    "mean": _reduction(lambda s, r: _C.mean(s)),
    "amax": _reduction(lambda s, r: amax(s)),
    "amin": _reduction(lambda s, r: amin(s)),
    "logsumexp": _reduction(lambda s, r: _logsumexp(s)),
})


@handles("var")
def _var(lw, node, x, dim=None, *args, correction=None, keepdim=False, unbiased=None, **kwargs):
    if args and isinstance(args[0], bool):  # var(x, dim, unbiased, keepdim)
        unbiased = args[0]
        keepdim = args[1] if len(args) > 1 else keepdim
    c = float(correction) if correction is not None else (0.0 if unbiased is False else 1.0)
    axes = _axes(x, dim, "var")
    return _reduced(lw, x, axes, lambda s, r: _variance(s, r, c), lw.out_dims(node))


@handles("var_mean")
def _var_mean(lw, node, x, dim=None, *, correction=None, keepdim=False):
    c = 1.0 if correction is None else float(correction)
    axes = _axes(x, dim, "var_mean")
    metas = node.meta["val"]
    var = _reduced(lw, x, axes, lambda s, r: _variance(s, r, c), lw.out_dims(node, metas[0]))
    mean = _reduced(lw, x, axes, lambda s, r: _C.mean(s), lw.out_dims(node, metas[1]))
    return (var, mean)


@handles("std")
def _std(lw, node, x, dim=None, *, correction=None, keepdim=False):
    c = 1.0 if correction is None else float(correction)
    axes = _axes(x, dim, "std")
    return _reduced(lw, x, axes, lambda s, r: _C.sqrt(_variance(s, r, c)), lw.out_dims(node))


@handles("linalg_vector_norm", "norm")
def _norm(lw, node, x, ord=2, dim=None, keepdim=False, *, dtype=None):
    p = float(ord)
    if p == 2:
        fn = lambda s, r: _C.sqrt(_C.sum(_C.mul(s, s)))  # noqa: E731
    elif p == 1:
        fn = lambda s, r: _C.sum(_C.abs(s))  # noqa: E731
    elif p == math.inf:
        fn = lambda s, r: amax(_C.abs(s))  # noqa: E731
    elif p == -math.inf:
        fn = lambda s, r: amin(_C.abs(s))  # noqa: E731
    elif p > 0:
        fn = lambda s, r: _C.exp(_C.mul(_C.log(_C.sum(_C.exp(_C.mul(_C.log(_C.abs(s)), p)))), 1.0 / p))  # noqa: E731
    else:
        raise CellfuseError(f"norm: ord={ord} is not supported in a cell")
    return _reduced(lw, x, _axes(x, dim, "norm"), fn, lw.out_dims(node))


def _max_values(fn, name):
    def handler(lw, node, x, dim=None, keepdim=False):
        if not isinstance(dim, int):
            raise CellfuseError(f"{name} of a whole per-step value reduces over the batch axis; give a dim")
        axes = _axes(x, dim, name)
        values = _reduced(lw, x, axes, lambda s, r: fn(s), lw.out_dims(node, node.meta["val"][0]))
        return (values, Unavailable(f"the indices of torch.{name}(x, dim)"))
    return handler


class Unavailable:
    """A result a cell cannot compute (argmax indices): an error where it is used."""

    def __init__(self, what):
        self.what = what


HANDLERS["max"] = _max_values(amax, "max")
HANDLERS["min"] = _max_values(amin, "min")


def _softmax_like(per_segment):
    def handler(lw, node, x, dim, *args, **kwargs):
        return _mapped(x, _axes(x, dim, op_name(node.target)), per_segment)
    return handler


def _softmax(s, r):
    e = _C.exp(_C.sub(s, amax(s)))
    return _C.div(e, _C.sum(e))


def _log_softmax(s, r):
    z = _C.sub(s, amax(s))
    return _C.sub(z, _C.log(_C.sum(_C.exp(z))))


HANDLERS.update({"_softmax": _softmax_like(_softmax), "softmax": _softmax_like(_softmax),
                 "_log_softmax": _softmax_like(_log_softmax), "log_softmax": _softmax_like(_log_softmax)})


@handles("native_layer_norm", "layer_norm")
def _layer_norm(lw, node, x, normalized_shape, weight=None, bias=None, eps=1e-5, *args):
    shape = [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)
    rank = len(x.dims)
    axes = list(range(rank - len(shape), rank))
    _axes(x, axes, "layer_norm")
    metas = node.meta["val"]
    out_dims = x.dims
    segments, order, r = _segments(x, axes)
    eps = float(eps)
    if len(segments) == 1 and order == list(range(len(order))):
        g = None if weight is None else broadcast_to(weight, out_dims, lw.feed)
        b = None if bias is None else broadcast_to(bias, out_dims, lw.feed)
        if not isinstance(g, float) and not isinstance(b, float):
            out = Batched(_C.layer_norm(x.val, g, b, eps), out_dims)
            return _with_statistics(lw, node, x, axes, out, eps, metas)
    out = _mapped(x, axes, lambda s, n: _C.layer_norm(s, None, None, eps))
    val = out.val
    if weight is not None:
        val = _C.mul(val, broadcast_to(weight, out_dims, lw.feed))
    if bias is not None:
        val = _C.add(val, broadcast_to(bias, out_dims, lw.feed))
    return _with_statistics(lw, node, x, axes, Batched(val, out_dims), eps, metas)


def _with_statistics(lw, node, x, axes, out, eps, metas):
    if not isinstance(metas, (tuple, list)):
        return out
    mean = _reduced(lw, x, axes, lambda s, r: _C.mean(s), lw.out_dims(node, metas[1]))
    rstd = _reduced(lw, x, axes, lambda s, r: _C.rsqrt(_C.add(_variance(s, r, 0.0), eps)),
                    lw.out_dims(node, metas[2]))
    return (out, mean, rstd)
