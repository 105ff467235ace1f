"""The values of a step being lowered, and layout as index maps.

A per-step value of any rank with one batch axis, e.g. (1, B, n), (B, 1, n) or (B, heads, d), is
one cellfuse value [B, F]: F = the product of its other axes, its features in row-major order of
those axes (`Batched`). So view/reshape/unsqueeze/squeeze of the other axes, and moving the batch
axis among size-1 axes, change only the recorded shape. Layout that reorders features (a
transpose of non-batch axes, expand, slicing, cat) becomes an index map: the features of the
result as positions in the operand, applied with slice/expand/cat, which the compiler turns into
column offsets inside fused kernels (never a copy at run time). The index map is computed by
applying the very ATen op to an integer tensor of feature positions in which the batch axis has
size 1.

Values without a batch axis (parameters, constants and what is computed from them only) stay
PyTorch computations (`Unbatched`): see _prelude.py.
"""
from __future__ import annotations

import math

import torch

from . import _C
from ._errors import CellfuseError


class Batched:
    """A per-step value: IR value `val` [B, F]; `dims` its logical shape with None at the batch axis;
    `boolean` when PyTorch holds it as a bool tensor (cellfuse: 0.0 / 1.0). A value made by a
    layout op is held as (`source`, `positions`): its features are source's at those positions,
    emitted (slices/cat) only when an op reads it, and composed with later layout ops, so a
    transpose followed by its inverse emits nothing."""

    __slots__ = ("_val", "dims", "boolean", "source", "positions")

    def __init__(self, val, dims, boolean=False, source=None, positions=None):
        self._val = val
        self.dims = tuple(dims)
        self.boolean = boolean
        self.source = source
        self.positions = positions
        count = val.features if val is not None else len(positions)
        if count != self.features:
            raise AssertionError(f"cellfuse internal: value of {count} features for shape {self.dims}")

    @property
    def val(self):
        if self._val is None:
            self._val = _gather(self.source, self.positions)
        return self._val

    @property
    def bpos(self):
        return self.dims.index(None)

    @property
    def features(self):
        return math.prod(d for d in self.dims if d is not None)

    @property
    def feature_shape(self):
        return tuple(d for d in self.dims if d is not None)


def take(x, positions):
    """The IR value of `x`'s features at `positions` (composed with x's own index map)."""
    positions = [int(p) for p in positions]
    if x._val is None:
        return _gather(x.source, [x.positions[p] for p in positions])
    return _gather(x.val, positions)


def relabel(x, positions, dims, boolean=None):
    """`x`'s features at `positions` as a value of shape `dims`, not emitted until read."""
    positions = [int(p) for p in positions]
    boolean = x.boolean if boolean is None else boolean
    if x._val is None:
        source, positions = x.source, [x.positions[p] for p in positions]
    else:
        source = x.val
    if positions == list(range(source.features)):
        return Batched(source, dims, boolean)
    return Batched(None, dims, boolean, source=source, positions=positions)


class RowGroups:
    """A per-step value viewed with its batch axis merged into the following axes, as
    `x.view(B * heads, d)` (what a product of a (B, heads, d) value with a weight becomes): row
    b * groups + g of the view is features [g * width, (g + 1) * width) of row b of `value`. Only a
    product (per group) and the view back to a batch axis may follow."""

    __slots__ = ("value", "groups", "width")

    def __init__(self, value, groups, width):
        self.value, self.groups, self.width = value, groups, width


class Unbatched:
    """A value computed without the step's inputs or states: an FX node the prelude computes."""

    __slots__ = ("node", "shape", "dtype")

    def __init__(self, node, shape, dtype):
        self.node = node
        self.shape = tuple(shape)
        self.dtype = dtype


def describe(dims) -> str:
    return "(" + ", ".join("B" if d is None else str(d) for d in dims) + ")"


def index_tensor(dims) -> torch.Tensor:
    """Feature positions of a value of logical shape `dims` (the batch axis as size 1)."""
    count = math.prod(d for d in dims if d is not None)
    return torch.arange(count, dtype=torch.int64).reshape([1 if d is None else d for d in dims])


def gather(val, positions):
    """The features `positions` of IR value `val` (a [B, F] Val), as slices, expands and one cat:
    runs of consecutive positions become slices, runs of one repeated position an expand."""
    return _gather(val, [int(p) for p in positions])


def _gather(val, positions):
    n_in = val.features
    if positions == list(range(n_in)):
        return val
    if not positions:
        raise CellfuseError("a value with no features")
    pieces, i, n = [], 0, len(positions)
    while i < n:
        j = i + 1
        if j < n and positions[j] == positions[i]:
            while j < n and positions[j] == positions[i]:
                j += 1
            column = val if n_in == 1 else _C.slice(val, positions[i], 1)
            pieces.append(_C.expand(column, j - i))
        else:
            while j < n and positions[j] == positions[j - 1] + 1 and not (j + 1 < n and positions[j + 1] == positions[j]):
                j += 1
            start, length = positions[i], j - i
            pieces.append(val if (start == 0 and length == n_in) else _C.slice(val, start, length))
        i = j
    return pieces[0] if len(pieces) == 1 else _C.cat(pieces)


def pattern_of(shape, batch_size) -> tuple:
    """`shape` with the batch axis (the axes of the traced batch size) as None; exactly one."""
    dims = tuple(None if int(d) == batch_size else int(d) for d in shape)
    if dims.count(None) != 1:
        return None
    return dims


def broadcast_to(value, out_dims, feed):
    """`value` (Batched, Unbatched or a number) as an operand of a pointwise op whose result has
    logical shape `out_dims`: an IR value of the result's features (or [1] / [F] parameter
    vectors, which the builder broadcasts over the batch), or a float. `feed(unbatched,
    transform, shape)` makes an IR parameter of the prelude's value."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    rank = len(out_dims)
    out_features = tuple(d for d in out_dims if d is not None)
    count = math.prod(out_features)
    bpos = out_dims.index(None)
    if isinstance(value, Batched):
        dims = (1,) * (rank - len(value.dims)) + value.dims
        if len(dims) != rank or dims[bpos] is not None:
            raise CellfuseError(f"operand of shape {describe(value.dims)} does not line up with the result "
                                f"{describe(out_dims)} on the batch axis")
        if dims == tuple(out_dims):
            return value.val
        if value.features == 1:
            return value.val if count == 1 else _C.expand(value.val, count)
        idx = index_tensor(dims).expand([1 if d is None else d for d in out_dims])
        return take(value, idx.reshape(-1).tolist())
    # Unbatched: its size on the batch axis must be 1 (it broadcasts over the batch).
    shape = (1,) * (rank - len(value.shape)) + value.shape
    if len(shape) != rank or shape[bpos] != 1:
        raise CellfuseError(f"a parameter-side tensor of shape {list(value.shape)} meets a per-step value of "
                            f"shape {describe(out_dims)} along its batch axis")
    if math.prod(value.shape) == 1:
        return feed(value, lambda t: t.reshape(1), (1,))
    target = [1 if d is None else d for d in out_dims]
    if [s for i, s in enumerate(shape) if i != bpos] == list(out_features):
        return feed(value, lambda t: t.reshape(-1), (count,))
    return feed(value, lambda t, shape=shape, target=target: t.reshape(shape).expand(target).reshape(-1),
                (count,))
