"""Lowering a captured ATen graph (see _fx_capture.py) op by op into a cellfuse cell.

Every node whose inputs include a per-step value (`Batched`) becomes IR through the handler
registered for its ATen op below; nodes without one stay in the prelude (`Unbatched`, run by
PyTorch once per sequence, see _prelude.py). Layout ops only relabel shapes or become index maps
(_values.py). An op without a handler, or a form a cell cannot express, is a CellfuseError naming
the op and the user's source line.
"""
from __future__ import annotations

import math
import operator

import torch

from . import _C
from ._errors import CellfuseError
from ._fx_capture import TRACE_BATCH, user_line_of_node
from ._values import Batched, RowGroups, Unbatched, broadcast_to, describe, gather, index_tensor, pattern_of

aten = torch.ops.aten
HANDLERS = {}


def handles(*names):
    def register(fn):
        for n in names:
            HANDLERS[n] = fn
        return fn
    return register


def op_name(target) -> str:
    """torch.<name> for an ATen overload (what users wrote, near enough), else its repr."""
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        return f"torch.{packet.__name__}"
    return getattr(target, "__name__", repr(target))


class Lowerer:
    """Walks one captured graph, building the cell with `builder`; `prelude` collects parameters."""

    def __init__(self, builder, prelude, dtype, example_dtype, name_of_param):
        self.b = builder
        self.prelude = prelude
        self.dtype = dtype  # the cell's (float32 for 16-bit examples)
        self.example_dtype = example_dtype
        self.env = {}
        self.anchor = None  # a per-step IR value, the shape source of per-step constants
        self.node = None
        self._params = {}
        self._taken = set()
        self.name_of_param = name_of_param
        self.param_keys = []  # per IR param: the module path when it is a module tensor as is
        self.param_names = []  # per IR param: its leaf name in the cell
        self.tensor_names = {}  # id(tensor) -> its name in the user's module

    # -- parameters from the prelude --------------------------------------------------------
    def feed(self, u, transform, shape, key=None):
        """An IR parameter holding `transform(value of u)` (shape `shape`), computed by the
        prelude; a constant one-element value is a number instead."""
        if tuple(shape) == (1,):
            constant = self.constant_scalar(u.node)
            if constant is not None:
                return constant
        k = (tuple(shape), key)
        index = self.prelude.add(u.node, transform, k)
        if index not in self._params:
            lifted = self.prelude.lifted_name(u.node)
            if lifted is None and u.node.op == "get_attr":  # a module tensor TorchScript reads, a closure's
                lifted = self.tensor_names.get(id(getattr(self.prelude.gm, u.node.target)))
            as_is = lifted is not None and (tuple(shape) == u.shape or math.prod(u.shape) == math.prod(shape))
            name = lifted if as_is else (f"{lifted}_derived" if lifted else f"derived_{u.node.name}")
            name = self.name_of_param(name, self._taken)
            self._params[index] = self.b.param(name, list(shape))
            self.param_keys.append(lifted if as_is else None)
            self.param_names.append(name)
        return self._params[index]

    def matrix(self, u):
        if len(u.shape) != 2:
            raise CellfuseError(f"a weight of shape {list(u.shape)} in a product: cellfuse products take a matrix")
        return self.feed(u, None, u.shape, key="matrix")

    def constant_scalar(self, node):
        """The number a one-element constant node holds (a literal, scalar_tensor), else None."""
        for _ in range(8):
            if node.op == "get_attr":
                t = getattr(self.prelude.gm, node.target)
                if t.numel() == 1 and not t.requires_grad:
                    return float(t.reshape(()).item())
                return None
            if node.op != "call_function":
                return None
            packet = getattr(node.target, "overloadpacket", None)
            name = packet.__name__ if packet is not None else ""
            if name == "scalar_tensor" or (name == "full" and list(node.args[0]) in ([], [1])):
                return float(node.args[1] if name == "full" else node.args[0])
            if name in ("lift_fresh_copy", "alias", "clone", "detach", "_to_copy") and node.args:
                node = node.args[0]
                continue
            return None
        return None

    def constant(self, value, features):
        c = _C.constant_like(_C.sum(self.anchor), float(value))
        return c if features == 1 else _C.expand(c, features)

    # -- walking ------------------------------------------------------------------------------
    def value_of(self, arg):
        if isinstance(arg, torch.fx.Node):
            value = self.env[arg]
            if type(value).__name__ == "Unavailable":
                raise CellfuseError(f"{value.what} are not supported in a cell")
            return value
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value_of(a) for a in arg)
        return arg

    def run(self, node):
        self.node = node
        args = self.value_of(node.args)
        kwargs = {k: self.value_of(v) for k, v in node.kwargs.items()}
        if node.target is operator.getitem:
            container = args[0]
            if isinstance(container, _Results):
                return self.unbatched(node)
            return container[args[1]]
        if not _any_batched((args, kwargs)):
            meta = node.meta.get("val")
            if isinstance(meta, torch.Tensor) and pattern_of(meta.shape, TRACE_BATCH) is not None:
                return self.per_step_from_constants(node, args, kwargs)
            return self.unbatched(node)
        packet = getattr(node.target, "overloadpacket", None)
        name = packet.__name__ if packet is not None else None
        if _any_batched((args, kwargs), RowGroups) and name not in _ROW_GROUP_OPS:
            raise CellfuseError(f"{op_name(node.target)} on a value whose batch axis is merged with other axes "
                                "(x.view(B * heads, d)): only a product with a weight, and the view back to a "
                                "batch axis, may follow such a view")
        handler = HANDLERS.get(name)
        if handler is None:
            raise CellfuseError(f"cellfuse cannot compile {op_name(node.target)} ({node.target}) on a per-step "
                                "value: not supported in a cell (cellfuse.SUPPORTED_OPS lists what is)")
        return handler(self, node, *args, **kwargs)

    def unbatched(self, node):
        meta = node.meta.get("val")
        if isinstance(meta, torch.Tensor):
            return Unbatched(node, meta.shape, meta.dtype)
        return _Results(node)

    def per_step_from_constants(self, node, args, kwargs):
        """A node without per-step operands whose result has the batch axis: a constant filled
        over the batch (torch.zeros(x.size(0), n)) or a parameter expanded over it."""
        dims = self.out_dims(node)
        packet = node.target.overloadpacket.__name__
        count = math.prod(d for d in dims if d is not None)
        if packet in ("full", "full_like", "zeros", "ones", "new_full", "new_zeros", "new_ones", "zeros_like",
                      "ones_like"):
            value = {"zeros": 0.0, "new_zeros": 0.0, "zeros_like": 0.0, "ones": 1.0, "new_ones": 1.0,
                     "ones_like": 1.0}.get(packet)
            if value is None:
                value = args[1] if packet in ("full", "full_like") else args[2]
            return Batched(self.constant(value, count), dims, node.meta["val"].dtype == torch.bool)
        if packet in ("expand", "view", "reshape", "_unsafe_view", "repeat") and isinstance(args[0], Unbatched):
            return Batched(self.broadcast_param(args[0], dims), dims)
        raise CellfuseError(f"{op_name(node.target)} makes a per-step value of shape {describe(dims)} from no "
                            "per-step input: only constants (torch.zeros/ones/full) and parameters expanded "
                            "over the batch are supported")

    def broadcast_param(self, u, dims):
        v = broadcast_to(u, dims, self.feed)
        count = math.prod(d for d in dims if d is not None)
        if isinstance(v, float):
            return self.constant(v, count)
        v = _C.broadcast(v)
        return v if v.features == count else _C.expand(v, count)

    def out_dims(self, node, meta=None):
        meta = node.meta["val"] if meta is None else meta
        dims = pattern_of(meta.shape, TRACE_BATCH)
        if dims is None:
            shape = ["B" if int(d) == TRACE_BATCH else int(d) for d in meta.shape]
            raise CellfuseError(f"{op_name(node.target)}: its result has shape {shape}: a per-step value keeps "
                                "exactly one batch axis (this op reduces over the batch, merges it with other "
                                "axes or slices it)")
        return dims

    def check_boolean(self, node):
        meta = node.meta.get("val")
        return isinstance(meta, torch.Tensor) and meta.dtype == torch.bool


class _Results:
    """A prelude op with several results (split of a weight): its getitem nodes are the values."""

    def __init__(self, node):
        self.node = node


_ROW_GROUP_OPS = ("view", "_unsafe_view", "reshape", "view_copy", "mm", "addmm", "alias", "clone", "detach")


def _any_batched(tree, kinds=(Batched, RowGroups)):
    if isinstance(tree, kinds):
        return True
    if isinstance(tree, (list, tuple)):
        return any(_any_batched(t, kinds) for t in tree)
    if isinstance(tree, dict):
        return any(_any_batched(t, kinds) for t in tree.values())
    return False


def lower_graph(lowerer, gm, leaves):
    """Lowers every node of `gm`; `leaves` maps the step's placeholders to their Batched values
    and the lifted ones to Unbatched. Returns the flat list of the graph's results."""
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            lowerer.env[node] = leaves[node]
        elif node.op == "get_attr":
            t = getattr(gm, node.target)
            lowerer.env[node] = Unbatched(node, t.shape, t.dtype)
        elif node.op == "call_function":
            try:
                lowerer.env[node] = lowerer.run(node)
            except CellfuseError as e:
                if "\n  at " in str(e):
                    raise
                raise CellfuseError(f"{e}\n  at {user_line_of_node(node)}") from None
        elif node.op == "output":
            flat, _ = torch.utils._pytree.tree_flatten(node.args[0])
            return [(lowerer.env[a] if isinstance(a, torch.fx.Node) else a, a) for a in flat]
        else:
            raise CellfuseError(f"cellfuse internal: unexpected FX node {node.op} {node.target}")
    raise CellfuseError("cellfuse internal: the captured graph has no output")


from . import _lower_ops  # noqa: E402,F401  (registers the handlers)

# The ATen ops a per-step value may meet (torch.<name>), for error messages and the docs; ops on
# parameters and constants alone are any PyTorch op (they run in the prelude).
SUPPORTED_OPS = sorted(set(HANDLERS) | {n for op in _C.op_table() for n in op["torch"]})
